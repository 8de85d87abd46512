"""`adb`: an Android device. Push the model (+ TFLite's `benchmark_model` binary or the agent),
run it with `adb shell`, parse the result, remove the pushed folder (also on failure).

Two runtimes, as the device file says:
- `benchmark_model`: the C++ tool; its text output is parsed by `profiling.benchmark_model`.
- `ai-edge-litert` / `tflite-runtime`: the agent, with a Python on the device (e.g. Termux).

Commands are built by small pure methods (tested without a device); `adb shell` receives one
string that the device's shell parses, built with `shlex.quote`. Old adb versions do not return the
remote exit status, so each remote command echoes it on a marker line.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ... import procs
from ...artifacts import sha256_file
from ...errors import PipelineError, UserError
from ..benchmark_model import benchmark_model_flags, parse_benchmark_output
from .base import AGENT, TRANSPORTS, Session, Transport, parse_agent_output
from .ssh import TEMP_PREFIX

EXIT_MARKER = "__edge_pipeline_exit="


class AdbSession(Session):
    def __init__(self, transport: AdbTransport, remote_dir: str, model: str, inputs: str | None, sha256: str) -> None:
        super().__init__(transport, model, inputs, sha256)
        self.remote_dir = remote_dir

    def agent(self, args: list[str], timeout: float) -> dict[str, Any]:
        t: AdbTransport = self.transport  # type: ignore[assignment]
        words = [*t.taskset_prefix(), t.settings.python, f"{self.remote_dir}/agent.py", *self.agent_args(args)]
        code, out, err = t.shell(" ".join(shlex.quote(w) for w in words), timeout)
        return parse_agent_output(out, err, t.device.name)

    def benchmark(self, mode: str, timeout: float) -> dict[str, Any]:
        """One benchmark_model run (`timing`, `memory` or `ops`), parsed."""
        t: AdbTransport = self.transport  # type: ignore[assignment]
        code, out, err = t.shell(t.benchmark_command(self.remote_dir, self.model, mode), timeout)
        if code != 0:
            tail = ([line for line in (out + err).splitlines() if line.strip()] or ["no output"])[-1]
            raise PipelineError(f"device {t.device.name}: benchmark_model failed (exit {code}): {tail[:300]}")
        try:
            return parse_benchmark_output(out + "\n" + err)
        except ValueError as exc:
            raise PipelineError(f"device {t.device.name}: {exc}") from None


class AdbTransport(Transport):
    kind = "adb"

    # ---- command construction (pure) ----
    def adb_base(self) -> list[str]:
        s = self.settings
        return [str(Path(s.adb).expanduser()) if "/" in s.adb else s.adb, *(["-s", s.serial] if s.serial else [])]

    def shell_command(self, remote: str) -> list[str]:
        return [*self.adb_base(), "shell", f"{remote}; echo {EXIT_MARKER}$?"]

    def push_command(self, local: Path, remote: str) -> list[str]:
        return [*self.adb_base(), "push", str(local), remote]

    def taskset_prefix(self) -> list[str]:
        """toybox taskset takes a hex CPU mask."""
        pins = self.device.pin_cores
        return ["taskset", format(sum(1 << c for c in pins), "x")] if pins else []

    def benchmark_command(self, remote_dir: str, model: str, mode: str) -> str:
        words = [*self.taskset_prefix(), f"{remote_dir}/benchmark_model",
                 *benchmark_model_flags(model, self.device.threads, self.device.budget, mode)]
        return " ".join(shlex.quote(w) for w in words)

    def binary(self) -> Path | None:
        return Path(self.settings.benchmark_model).expanduser() if self.settings.benchmark_model else None

    # ---- running ----
    def _run(self, cmd: list[str], timeout: float) -> subprocess.CompletedProcess:
        if shutil.which(cmd[0]) is None and not Path(cmd[0]).is_file():
            raise UserError(f"device {self.device.name}: {cmd[0]} not found; install adb (`make system-deps`) or set transport.adb")
        try:
            return procs.run(cmd, timeout=timeout)  # dies with us (the adb server is not our child)
        except subprocess.TimeoutExpired:
            raise PipelineError(f"device {self.device.name}: adb did not finish within {timeout:.0f}s") from None

    def shell(self, remote: str, timeout: float | None = None) -> tuple[int, str, str]:
        proc = self._run(self.shell_command(remote), timeout or self.settings.command_timeout_s)
        match = re.search(re.escape(EXIT_MARKER) + r"(\d+)\s*$", proc.stdout)
        if match is None:
            raise UserError(f"device {self.device.name}: adb shell failed: {self._why(proc)}")
        return int(match.group(1)), proc.stdout[: match.start()], proc.stderr

    def _why(self, proc: subprocess.CompletedProcess) -> str:
        text = " ".join((proc.stderr or proc.stdout).split())
        if "no devices" in text or "not found" in text:
            return f"{text[:200]}; connect the device (USB debugging on) and check `adb devices`"
        if "unauthorized" in text:
            return f"{text[:200]}; accept the USB debugging prompt on the device"
        return text[:300] or "no output"

    def push(self, local: Path, remote: str) -> None:
        proc = self._run(self.push_command(local, remote), self.settings.command_timeout_s)
        if proc.returncode != 0:
            raise PipelineError(f"device {self.device.name}: adb push {local.name} failed: {self._why(proc)}")

    def is_our_temp_dir(self, path: str) -> bool:
        prefix = re.escape(self.settings.remote_dir.rstrip("/") + "/" + TEMP_PREFIX)
        return re.fullmatch(prefix + r"[A-Za-z0-9]{8}", path) is not None

    @contextmanager
    def session(self, model: Path, inputs: Path | None = None) -> Iterator[Session]:
        binary = self.binary()
        if self.device.runtime.name == "benchmark_model" and (binary is None or not binary.is_file()):
            raise UserError(f"device {self.device.name}: transport.benchmark_model {binary} is not a file; "
                            "download TFLite's Android benchmark_model binary and set its path")
        template = f"{self.settings.remote_dir.rstrip('/')}/{TEMP_PREFIX}XXXXXXXX"
        code, out, err = self.shell("mktemp -d " + shlex.quote(template))
        remote_dir = out.strip()
        if code != 0 or not self.is_our_temp_dir(remote_dir):
            raise PipelineError(f"device {self.device.name}: cannot make a temp dir under {self.settings.remote_dir}: "
                                f"{(out + err).strip()[:200]}")
        try:
            files = {"model.tflite": Path(model)}
            if self.device.runtime.name == "benchmark_model":
                files["benchmark_model"] = binary  # type: ignore[assignment]
            else:
                files["agent.py"] = AGENT
                if inputs is not None:
                    files["inputs.npy"] = Path(inputs)
            for name, path in files.items():
                self.push(path, f"{remote_dir}/{name}")
            self.verify(remote_dir, {name: sha256_file(path) for name, path in files.items()})
            if "benchmark_model" in files:
                self.shell("chmod 755 " + shlex.quote(f"{remote_dir}/benchmark_model"))
            yield AdbSession(self, remote_dir, f"{remote_dir}/model.tflite",
                             f"{remote_dir}/inputs.npy" if "inputs.npy" in files else None, sha256_file(Path(model)))
        finally:
            if self.is_our_temp_dir(remote_dir):
                try:
                    self.shell("rm -rf " + shlex.quote(remote_dir))
                except (UserError, PipelineError):
                    pass

    def verify(self, remote_dir: str, expected: dict[str, str]) -> None:
        code, out, _ = self.shell("sha256sum " + " ".join(shlex.quote(f"{remote_dir}/{n}") for n in expected))
        found = {line.split()[1]: line.split()[0] for line in out.splitlines() if len(line.split()) == 2}
        for name, digest in expected.items():
            if found.get(f"{remote_dir}/{name}") != digest:
                raise PipelineError(f"device {self.device.name}: {name} arrived corrupted on the device (sha256 mismatch)")

    def check(self) -> str | None:
        binary = self.binary()
        if self.device.runtime.name == "benchmark_model" and (binary is None or not binary.is_file()):
            return f"transport.benchmark_model {binary} is not a file (download TFLite's Android benchmark_model)"
        adb = self.adb_base()[0]
        if shutil.which(adb) is None and not Path(adb).is_file():
            return f"{adb} not installed (make system-deps)"
        try:
            proc = self._run([*self.adb_base(), "get-state"], 30)
        except PipelineError as exc:
            return str(exc)
        state = proc.stdout.strip()
        if proc.returncode != 0 or state != "device":
            return self._why(proc) if proc.returncode != 0 else f"device state {state!r} (want 'device')"
        return None


TRANSPORTS.register("adb", AdbTransport)
