"""`local`: the agent in a fresh subprocess on this machine, optionally pinned with taskset.
The agent runs through `procs`: its own process group, killed on timeout, and dead with us."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ... import procs
from ...errors import PipelineError, UserError
from .base import AGENT, RUNTIME_PROBE, TRANSPORTS, Session, Transport, parse_agent_output


def taskset_prefix(device) -> list[str]:
    """`taskset -c 0,1` (util-linux) when the device pins cores, else nothing."""
    if not device.pin_cores:
        return []
    return ["taskset", "-c", ",".join(str(c) for c in device.pin_cores)]


class LocalSession(Session):
    def command(self, args: list[str]) -> list[str]:
        transport: LocalTransport = self.transport  # type: ignore[assignment]
        return [*taskset_prefix(transport.device), transport.python(), str(AGENT), *self.agent_args(args)]

    def agent(self, args: list[str], timeout: float) -> dict[str, Any]:
        return run_local(self.command(args), self.transport.device.name, timeout)


def run_local(cmd: list[str], device: str, timeout: float, env: dict[str, str] | None = None) -> dict[str, Any]:
    try:
        proc = procs.run(cmd, timeout=timeout, env=env)
    except FileNotFoundError as exc:
        raise UserError(f"device {device}: cannot start {exc.filename}; check the device file") from None
    except subprocess.TimeoutExpired:
        raise PipelineError(f"device {device}: the agent did not finish within {timeout:.0f}s") from None
    return parse_agent_output(proc.stdout, proc.stderr, device)


class LocalTransport(Transport):
    kind = "local"

    def python(self) -> str:
        return self.settings.python or sys.executable

    @contextmanager
    def session(self, model: Path, inputs: Path | None = None) -> Iterator[Session]:
        if self.device.pin_cores and shutil.which("taskset") is None:
            raise UserError(f"device {self.device.name}: pin_cores needs `taskset` (util-linux), which is not installed")
        yield LocalSession(self, str(model), str(inputs) if inputs else None, None)

    def check(self) -> str | None:
        python = self.python()
        if shutil.which(python) is None and not Path(python).is_file():
            return f"python {python!r} not found"
        if self.device.pin_cores and shutil.which("taskset") is None:
            return "pin_cores needs taskset (util-linux)"
        try:
            probe = procs.run([python, "-c", RUNTIME_PROBE], timeout=120)
        except subprocess.TimeoutExpired:
            return f"{python}: the runtime probe did not answer within 120s"
        if probe.returncode != 0:
            return f"{python}: {(probe.stderr.strip().splitlines() or ['no TFLite runtime'])[-1]}"
        return None


TRANSPORTS.register("local", LocalTransport)
