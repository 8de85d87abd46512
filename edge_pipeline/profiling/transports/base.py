"""The transport interface and the registry of transport kinds.

A transport opens a *session* for one model: the model (and the agent, and optional input samples)
are placed where the device can read them, each `agent(args)` call runs the agent there in a fresh
process and returns its JSON, and leaving the session removes whatever was placed on the device,
also when a run failed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ...errors import PipelineError, UserError
from ...registry import Registry

AGENT = Path(__file__).resolve().parents[1] / "agent.py"


class Session:
    """One model placed on one device. `model`/`inputs` are paths as the device sees them."""

    def __init__(self, transport: Transport, model: str, inputs: str | None, sha256: str | None) -> None:
        self.transport = transport
        self.model = model
        self.inputs = inputs
        self.sha256 = sha256

    def agent_args(self, args: list[str]) -> list[str]:
        out = [self.model, *args]
        if self.sha256:
            out += ["--sha256", self.sha256]
        if self.inputs and "--mode" in args and args[args.index("--mode") + 1] == "outputs":
            out += ["--inputs", self.inputs]
        return out

    def agent(self, args: list[str], timeout: float) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError


class Transport:
    """Reaches one device. Subclasses implement `session` and `check`."""

    kind: str

    def __init__(self, device) -> None:
        self.device = device
        self.settings = device.transport

    @contextmanager
    def session(self, model: Path, inputs: Path | None = None) -> Iterator[Session]:  # pragma: no cover
        raise NotImplementedError
        yield

    def check(self) -> str | None:
        """None if the device is reachable and has a runtime, else why not (one line)."""
        return None


TRANSPORTS: Registry[type[Transport]] = Registry("transport")


def make_transport(device) -> Transport:
    return TRANSPORTS.get(device.transport.kind)(device)


# A Python one-liner (3.8+) run on the device by `check()`: exits 0 if numpy and a TFLite runtime
# import, else prints why. Kept to one line so it passes through ssh/adb shells quoted as one word.
RUNTIME_PROBE = (
    "import importlib.util, sys; import numpy; "
    "ok = [m for m in ('ai_edge_litert.interpreter', 'tflite_runtime.interpreter') "
    "if importlib.util.find_spec(m.split('.')[0]) is not None]; "
    "sys.exit(0 if ok else 'no TFLite runtime (ai-edge-litert or tflite-runtime) importable')"
)

MISSING_RUNTIME_HINT = "install numpy and ai-edge-litert (or tflite-runtime) for the device's python"


def parse_agent_output(stdout: str, stderr: str, device: str) -> dict[str, Any]:
    """The agent's JSON (its last stdout line), or one clear error naming the device."""
    lines = [line for line in stdout.strip().splitlines() if line.startswith("{")]
    if not lines:
        tail = (stderr.strip().splitlines() or ["no output"])[-1]
        raise PipelineError(f"device {device}: the agent produced no result ({tail[:300]})")
    try:
        result = json.loads(lines[-1])
    except json.JSONDecodeError:
        raise PipelineError(f"device {device}: unreadable agent output: {lines[-1][:200]}") from None
    if not result.get("ok"):
        error = result.get("error", "unknown error")
        if "no TFLite runtime" in error or "No module named 'numpy'" in error:
            raise UserError(f"device {device}: {error}; {MISSING_RUNTIME_HINT}")
        raise PipelineError(f"device {device}: the agent failed: {error}")
    return result
