"""The transport interface and the registry of transport kinds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ...errors import PipelineError, UserError
from ...registry import Registry

AGENT = Path(__file__).resolve().parents[1] / "agent.py"


class Transport:
    """Runs the agent for one device. Subclasses implement `run_agent` and `check`."""

    kind: str

    def __init__(self, device) -> None:
        self.device = device

    def run_agent(self, model: Path, args: list[str], timeout: float) -> dict[str, Any]:  # pragma: no cover
        raise NotImplementedError

    def check(self) -> str | None:
        """None if the device is reachable and has a runtime, else why not."""
        return None


TRANSPORTS: Registry[type[Transport]] = Registry("transport")


def make_transport(device) -> Transport:
    return TRANSPORTS.get(device.transport.kind)(device)


def parse_agent_output(stdout: str, stderr: str, device: str) -> dict[str, Any]:
    """The agent's JSON (its last stdout line), or one clear error naming the device."""
    lines = [l for l in stdout.strip().splitlines() if l.startswith("{")]
    if not lines:
        tail = (stderr.strip().splitlines() or ["no output"])[-1]
        raise PipelineError(f"device {device}: the agent produced no result ({tail[:300]})")
    try:
        result = json.loads(lines[-1])
    except json.JSONDecodeError:
        raise PipelineError(f"device {device}: unreadable agent output: {lines[-1][:200]}") from None
    if not result.get("ok"):
        error = result.get("error", "unknown error")
        if "no TFLite runtime" in error:
            raise UserError(f"device {device}: {error}; install ai-edge-litert (or tflite-runtime) for the device's python")
        raise PipelineError(f"device {device}: the agent failed: {error}")
    return result
