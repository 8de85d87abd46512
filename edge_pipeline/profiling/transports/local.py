"""`local`: the agent in a fresh subprocess on this machine, optionally pinned with taskset."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from ...errors import PipelineError, UserError
from .base import AGENT, TRANSPORTS, Transport, parse_agent_output


class LocalTransport(Transport):
    kind = "local"

    def command(self, model: Path, args: list[str]) -> list[str]:
        python = self.device.transport.python or sys.executable
        cmd = [python, str(AGENT), str(model), *args]
        if self.device.pin_cores:
            if shutil.which("taskset") is None:
                raise UserError(f"device {self.device.name}: pin_cores needs `taskset` (util-linux), which is not installed")
            cmd = ["taskset", "-c", ",".join(str(c) for c in self.device.pin_cores), *cmd]
        return cmd

    def run_agent(self, model: Path, args: list[str], timeout: float) -> dict[str, Any]:
        try:
            proc = subprocess.run(self.command(model, args), capture_output=True, text=True, timeout=timeout)
        except FileNotFoundError as exc:
            raise UserError(f"device {self.device.name}: cannot start {exc.filename}; check transport.python") from None
        except subprocess.TimeoutExpired:
            raise PipelineError(f"device {self.device.name}: the agent did not finish within {timeout:.0f}s") from None
        return parse_agent_output(proc.stdout, proc.stderr, self.device.name)

    def check(self) -> str | None:
        python = self.device.transport.python or sys.executable
        if shutil.which(python) is None and not Path(python).is_file():
            return f"python {python!r} not found"
        return None


TRANSPORTS.register("local", LocalTransport)
