"""`qemu`: the agent on the aarch64 build of the TFLite runtime, under qemu-aarch64-static.

User-mode qemu translates the ARM instructions of the sysroot's Python, numpy and the runtime's
kernels (XNNPACK's NEON paths included), so a model that runs here loads and computes on aarch64.
Its latency is emulated: meaningful only relative to other models on the same emulator.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..emulator import ensure_sysroot, find_sysroot, missing_tools, sysroot_dir
from .base import AGENT, TRANSPORTS, Session, Transport
from .local import run_local


class QemuSession(Session):
    def __init__(self, transport, model, inputs, sysroot) -> None:
        super().__init__(transport, model, inputs, None)
        self.sysroot = sysroot

    def command(self, args: list[str]) -> list[str]:
        # qemu's -L looks paths up in the sysroot first, then on the host: host paths work as is.
        return self.sysroot.command([str(AGENT), *self.agent_args(args)])

    def agent(self, args: list[str], timeout: float) -> dict[str, Any]:
        return run_local(self.command(args), self.transport.device.name, timeout, env=self.sysroot.env())


class QemuTransport(Transport):
    kind = "qemu"

    @contextmanager
    def session(self, model: Path, inputs: Path | None = None) -> Iterator[Session]:
        sysroot = ensure_sysroot(self.settings)
        yield QemuSession(self, str(Path(model).resolve()), str(Path(inputs).resolve()) if inputs else None, sysroot)

    def check(self) -> str | None:
        if shutil.which(self.settings.qemu) is None:
            return f"{self.settings.qemu} not installed (make system-deps)"
        if find_sysroot(self.settings) is None:
            missing = missing_tools(self.settings)
            if missing:
                return f"emulator not set up and {', '.join(missing)} missing (make system-deps emulator)"
            return f"emulator not set up yet: built on first use, or now with `make emulator` ({sysroot_dir(self.settings)})"
        return None


TRANSPORTS.register("qemu", QemuTransport)
