"""Reaching a device's release tree through its transport (profiling/transports): one `Target` per
device that runs the release script (`shell.SCRIPT`), sends files and runs the runner there.

- local: the script and the runner as subprocesses of this machine (`procs`: own process group,
  dead with us). Default root: `$XDG_DATA_HOME/edge-pipeline/deploy` (~/.local/share/...).
- qemu: the emulated aarch64 sysroot is the device: releases live inside it (default root
  `<sysroot>/opt/edge-pipeline`), the runner runs on its Python under qemu-aarch64-static; the
  script runs on this machine's shell, since the emulator shares this machine's files.
- ssh: every step is one `ssh` call of the transport (host keys checked, keys only, typed options);
  files go as one tar stream on stdin. Default root: the user's home.
- adb: `adb shell` of the transport; files are pushed one by one (adb shell has no stdin on older
  devices). Default root: /data/local/tmp/edge-pipeline. Without a Python on the phone the runner
  cannot run: TFLite's `benchmark_model` loads and times the model instead.

Every value in a remote command was validated by `names` and is quoted with `shlex.quote`; output
read back is bounded by `procs` (the last 4 MiB of each stream).
"""

from __future__ import annotations

import io
import json
import os
import shlex
import subprocess
import tarfile
import time
from pathlib import Path
from typing import Any

from .. import procs
from ..artifacts import LIMIT_TFLITE, read_bytes_bounded, sha256_file
from ..errors import PipelineError, UserError
from ..profiling.benchmark_model import benchmark_model_flags, parse_benchmark_output
from ..profiling.devices import AdbSettings, DeviceProfile, SshSettings
from ..profiling.emulator import ensure_sysroot
from ..profiling.transports import Transport, make_transport
from ..profiling.transports.adb import AdbTransport
from ..profiling.transports.local import LocalTransport
from ..profiling.transports.ssh import SshTransport
from .names import HOME_ROOT, check_app, check_root
from .shell import parse_hashes, script_argv

RUNNER = "edge_predict.py"
LOCAL_TIMEOUT_S = 300.0
# The emulator runs Python ~30-100x slower: starting it with numpy, Pillow and the runtime takes seconds.
EMULATED_RUNNER_TIMEOUT_S = 900.0
BENCHMARK_TOOL = ".benchmark_model"  # pushed into the upload folder, removed before the release is committed
RUNTIME_HINT = "install python3 with numpy, Pillow and ai-edge-litert (or tflite-runtime) on the device"


def default_local_root() -> str:
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return str(Path(data_home).expanduser() / "edge-pipeline" / "deploy")


class Target:
    """One device's release tree (`<root>/<app>/...`) and the commands that reach it."""

    default_root = HOME_ROOT
    transport: Transport

    def __init__(self, device: DeviceProfile, root: str | None) -> None:
        self.device = device
        self.transport = make_transport(device)
        self.root = check_root(root) if root else self.default_root_for_device()
        self.timeout = float(getattr(device.transport, "command_timeout_s", LOCAL_TIMEOUT_S))

    @property
    def name(self) -> str:
        return self.device.name

    def default_root_for_device(self) -> str:
        return self.default_root

    def describe_root(self) -> str:
        return "~ (the home folder)" if self.root == HOME_ROOT else self.root

    # ---- one command on the device: (exit code, stdout, stderr) ----
    def execute(self, words: list[str], stdin: bytes | None, timeout: float) -> tuple[int, str, str]:  # pragma: no cover
        raise NotImplementedError

    @property
    def has_python(self) -> bool:
        return True

    def python(self) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    # ---- the release script ----
    def ops(self, op: str, app: str, *args: str, stdin: bytes | None = None, timeout: float | None = None) -> str:
        app = app if op == "apps" else check_app(app)
        code, out, err = self.execute(script_argv(op, self.root, app, *args), stdin, timeout or self.timeout)
        if code != 0:
            lines = [line for line in err.splitlines() if line.strip()]
            why = next((line.split(": ", 1)[1] for line in reversed(lines) if line.startswith("edge-release: ")), None)
            raise PipelineError(f"device {self.name}: {op} failed: {why or (lines or ['exit ' + str(code)])[-1][:300]}")
        return out

    def send(self, app: str, release: str, incoming: str, files: dict[str, Path]) -> dict[str, str]:
        """Put `files` ({relative name: local path}) into the upload folder; their sha256 as the device computes them."""
        return parse_hashes(self.ops("receive", app, release, stdin=tar_bytes(files)))

    # ---- the runner ----
    def runner_command(self, folder: str, args: list[str]) -> tuple[list[str], dict[str, str] | None]:
        return [self.python(), f"{folder}/{RUNNER}", *args], None

    def run_runner(self, folder: str, args: list[str]) -> dict[str, Any]:
        """The runner's JSON (`--json` is added), or one clear error naming the device."""
        words, env = self.runner_command(folder, [*args, "--json"])
        code, out, err = self.runner_execute(words, env)
        if code == 127:
            raise UserError(f"device {self.name}: {words[0]!r} not found on the device; {RUNTIME_HINT}")
        lines = [line for line in out.splitlines() if line.startswith("{")]
        if not lines:
            tail = ([line for line in err.splitlines() if line.strip()] or [f"exit {code}, no output"])[-1]
            raise PipelineError(f"device {self.name}: the runner produced no result ({tail[:300]})")
        try:
            result = json.loads(lines[-1])
        except json.JSONDecodeError:
            raise PipelineError(f"device {self.name}: unreadable runner output: {lines[-1][:200]}") from None
        if not isinstance(result, dict) or not result.get("ok"):
            error = str(result.get("error") if isinstance(result, dict) else result)
            if isinstance(result, dict) and result.get("exit_code") == 2:
                raise UserError(f"device {self.name}: {error}")
            raise PipelineError(f"device {self.name}: the runner failed: {error}")
        return result

    def runner_execute(self, words: list[str], env: dict[str, str] | None) -> tuple[int, str, str]:
        return self.execute(words, None, max(self.timeout, LOCAL_TIMEOUT_S))

    def reachable(self) -> str | None:
        """None if the device answers (the transport's own check), else why not."""
        return self.transport.check()


def tar_bytes(files: dict[str, Path]) -> bytes:
    """An uncompressed tar of `files` with plain modes (0644 files, 0755 folders), each read with a bound."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        folders = sorted({str(Path(rel).parent) for rel in files if str(Path(rel).parent) != "."})
        for folder in folders:
            info = tarfile.TarInfo(folder)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, int(time.time())
            archive.addfile(info)
        for rel, path in files.items():
            data = read_bytes_bounded(path, LIMIT_TFLITE, "file to deploy")
            info = tarfile.TarInfo(rel)
            info.size, info.mode, info.mtime = len(data), 0o644, int(time.time())
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


class LocalTarget(Target):
    transport: LocalTransport

    def default_root_for_device(self) -> str:
        return default_local_root()

    def python(self) -> str:
        return self.transport.python()

    def execute(self, words: list[str], stdin: bytes | None, timeout: float, env: dict[str, str] | None = None) -> tuple[int, str, str]:
        try:
            proc = procs.run(words, input=stdin, timeout=timeout, env=env, text=False)
        except FileNotFoundError as exc:
            raise UserError(f"device {self.name}: cannot start {exc.filename}; check the device file") from None
        except subprocess.TimeoutExpired:
            raise PipelineError(f"device {self.name}: {Path(words[0]).name} did not finish within {timeout:.0f}s") from None
        return proc.returncode, proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace")

    def runner_execute(self, words: list[str], env: dict[str, str] | None) -> tuple[int, str, str]:
        return self.execute(words, None, LOCAL_TIMEOUT_S, env)


class QemuTarget(LocalTarget):
    """The sysroot is the device; its files are this machine's, so only the runner is emulated."""

    def __init__(self, device: DeviceProfile, root: str | None) -> None:
        self.sysroot = ensure_sysroot(device.transport)
        super().__init__(device, root)

    def default_root_for_device(self) -> str:
        return str(self.sysroot.root / "opt" / "edge-pipeline")

    def runner_command(self, folder: str, args: list[str]) -> tuple[list[str], dict[str, str] | None]:
        # Host paths work under qemu's -L: a path that does not exist in the sysroot is looked up on the host.
        return self.sysroot.command([f"{folder}/{RUNNER}", *args]), self.sysroot.env()

    def runner_execute(self, words: list[str], env: dict[str, str] | None) -> tuple[int, str, str]:
        return self.execute(words, None, EMULATED_RUNNER_TIMEOUT_S, env)


class SshTarget(Target):
    transport: SshTransport
    settings: SshSettings

    def __init__(self, device: DeviceProfile, root: str | None) -> None:
        super().__init__(device, root)
        self.settings = self.transport.settings

    def python(self) -> str:
        return self.settings.python

    def execute(self, words: list[str], stdin: bytes | None, timeout: float) -> tuple[int, str, str]:
        proc = self.transport.ssh(" ".join(shlex.quote(w) for w in words), timeout=timeout, stdin=stdin)
        return proc.returncode, proc.stdout, proc.stderr


class AdbTarget(Target):
    default_root = "/data/local/tmp/edge-pipeline"
    transport: AdbTransport
    settings: AdbSettings

    def __init__(self, device: DeviceProfile, root: str | None) -> None:
        super().__init__(device, root)
        self.settings = self.transport.settings

    @property
    def has_python(self) -> bool:
        return self.device.runtime.name != "benchmark_model" and bool(self.settings.python)

    def python(self) -> str:
        return self.settings.python or "python3"

    def execute(self, words: list[str], stdin: bytes | None, timeout: float) -> tuple[int, str, str]:
        if stdin is not None:  # pragma: no cover - callers push files instead
            raise PipelineError(f"device {self.name}: adb shell takes no input here")
        return self.transport.shell(" ".join(shlex.quote(w) for w in words), timeout)

    def send(self, app: str, release: str, incoming: str, files: dict[str, Path]) -> dict[str, str]:
        folders = sorted({str(Path(rel).parent) for rel in files if str(Path(rel).parent) != "."})
        if folders:
            code, _, err = self.execute(["mkdir", "-p", *(f"{incoming}/{f}" for f in folders)], None, self.timeout)
            if code != 0:
                raise PipelineError(f"device {self.name}: cannot create folders in {incoming}: {err.strip()[:200]}")
        for rel, path in files.items():
            self.transport.push(path, f"{incoming}/{rel}")
        return parse_hashes(self.ops("hash", app, release, "incoming"))

    def push_record(self, incoming: str, record: Path) -> None:
        self.transport.push(record, f"{incoming}/release.json")

    def benchmark(self, incoming: str, model: str, binary: Path) -> dict[str, Any]:
        """TFLite's benchmark_model on the uploaded model: does it load, and how fast (no outputs)."""
        tool = f"{incoming}/{BENCHMARK_TOOL}"
        self.transport.push(binary, tool)
        try:
            self.execute(["chmod", "755", tool], None, self.timeout)
            flags = benchmark_model_flags(f"{incoming}/{model}", self.device.threads, self.device.budget, "timing")
            code, out, err = self.execute([tool, *flags], None, self.device.budget.max_seconds * 3 + 300)
            if code != 0:
                tail = ([line for line in (out + err).splitlines() if line.strip()] or ["no output"])[-1]
                raise PipelineError(f"device {self.name}: benchmark_model could not run {model} (exit {code}): {tail[:300]}")
            try:
                return parse_benchmark_output(out + "\n" + err)
            except ValueError as exc:
                raise PipelineError(f"device {self.name}: {exc}") from None
        finally:
            self.execute(["rm", "-f", tool], None, self.timeout)


TARGETS: dict[str, type[Target]] = {"local": LocalTarget, "qemu": QemuTarget, "ssh": SshTarget, "adb": AdbTarget}


def open_target(device: DeviceProfile, root: str | None = None) -> Target:
    return TARGETS[device.transport.kind](device, root)


def local_sha256s(files: dict[str, Path]) -> dict[str, str]:
    return {rel: sha256_file(path) for rel, path in files.items()}
