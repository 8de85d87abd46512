"""Device profiles: one YAML file per device (devices/*.yaml), validated by a strict schema.

A profile says what the device is (arch, cores, memory), how to reach it (`transport`, a union
discriminated by `kind`: local | qemu | ssh | adb, each with its own typed settings), which runtime
measures there, with how many threads, which ops it can run, and how long to measure (`budget`).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationError, model_validator

from ..artifacts import read_text_bounded
from ..catalog import devices_dir
from ..errors import UserError
from ..schema import NAME_MAX_LENGTH, NAME_PATTERN, Strict
from ..yamlio import dotted, load_located
from .fields import (
    MAX_CONNECT_SECONDS,
    MAX_CORES,
    MAX_COUNT_RUNS,
    MAX_KEEPALIVE_COUNT,
    MAX_KEEPALIVE_SECONDS,
    MAX_MEMORY_MB,
    MAX_SECONDS,
    MAX_WARMUP_RUNS,
    AdbProgram,
    HostName,
    JumpHost,
    LocalPath,
    PinnedWheel,
    PlainText,
    PythonProgram,
    QemuProgram,
    RejectedSshOption,
    RemoteDir,
    RemoteWord,
    Seconds,
    UserName,
)

BUILTIN_DEVICES = devices_dir()
DEVICE_FILE_LIMIT = 1 << 20  # a device file is a few hundred bytes


class Budget(Strict):
    """How long to measure. A run that misses a minimum or is too noisy is marked invalid. Every
    count and duration is bounded: a budget that could not finish is an error, not a hang."""

    warmup_runs: int = Field(5, ge=0, le=MAX_WARMUP_RUNS)
    min_runs: int = Field(50, ge=1, le=MAX_COUNT_RUNS)
    min_seconds: float = Field(1.0, ge=0, le=MAX_SECONDS, allow_inf_nan=False)
    max_seconds: Seconds = 60.0
    max_rel_std: float = Field(0.25, gt=0, le=1000, allow_inf_nan=False,
                               description="Largest acceptable robust std (1.4826 MAD) / median.")

    @model_validator(mode="after")
    def _ordered(self):
        if self.min_seconds > self.max_seconds:
            raise ValueError(f"min_seconds ({self.min_seconds}) must be <= max_seconds ({self.max_seconds})")
        return self


RuntimeName = Literal["ai-edge-litert", "tflite-runtime", "benchmark_model"]


class Runtime(Strict):
    """What measures on the device. `benchmark_model` is TFLite's C++ tool (adb devices only)."""

    name: RuntimeName = "ai-edge-litert"
    version: str | None = Field(None, pattern=r"^[0-9A-Za-z][0-9A-Za-z.+!-]{0,63}$",
                                description="Expected version; a different one on the device is reported, not fatal.")


class LocalSettings(Strict):
    """This machine: the agent in a fresh subprocess (optionally pinned with taskset)."""

    kind: Literal["local"] = "local"
    python: PythonProgram | None = Field(
        None, description="Interpreter that runs the agent (default: this one): a command name or an absolute path.",
    )


class QemuSettings(Strict):
    """An aarch64 Debian sysroot run under qemu-aarch64-static (user mode). Latency is emulated."""

    kind: Literal["qemu"] = "qemu"
    suite: str = Field("bookworm", pattern=r"^[a-z]{1,32}$", description="Debian release of the sysroot.")
    python_version: str = Field("3.11", pattern=r"^3\.\d{1,2}$", description="Python of that release (bookworm: 3.11).")
    packages: list[PinnedWheel] = Field(
        default_factory=lambda: ["ai-edge-litert==2.1.0", "numpy==1.26.4"],
        min_length=1, max_length=64, description="aarch64 wheels (name==version) unpacked onto the sysroot's PYTHONPATH.",
    )
    cache_dir: LocalPath | None = Field(None, description="Default: $EDGE_PIPELINE_CACHE or ~/.cache/edge-pipeline.")
    qemu: QemuProgram = Field("qemu-aarch64-static", description="The user-mode emulator binary.")


class SshSettings(Strict):
    """A board over OpenSSH: key auth only (BatchMode), host keys checked against known_hosts.

    Every ssh option is a typed field with a validated value; there is no free-form option list,
    because several ssh options run local commands (ProxyCommand, LocalCommand, Match exec...)."""

    kind: Literal["ssh"] = "ssh"
    host: HostName = Field(description="Host name or address (or an alias from ~/.ssh/config).")
    user: UserName | None = None
    port: int = Field(22, ge=1, le=65535)
    identity_file: LocalPath | None = Field(None, description="Private key (default: ssh's own choice).")
    known_hosts_file: LocalPath | None = Field(None, description="Default: ssh's own (~/.ssh/known_hosts).")
    strict_host_key_checking: Literal["yes", "accept-new"] = Field(
        "yes", description="'yes' (default) refuses unknown hosts; 'accept-new' trusts a first-seen key, never a changed one.",
    )
    jump_host: JumpHost | None = Field(
        None, description="Reach the host through this bastion: [user@]host[:port] (ssh -J; its own settings come "
                          "from ~/.ssh/config).",
    )
    python: RemoteWord = Field("python3", description="The target's Python (3.8+), with numpy and a TFLite runtime.")
    connect_timeout_s: int = Field(10, ge=1, le=MAX_CONNECT_SECONDS)
    server_alive_interval_s: int = Field(5, ge=1, le=MAX_KEEPALIVE_SECONDS,
                                         description="Seconds between keep-alive probes on a quiet connection.")
    server_alive_count_max: int = Field(3, ge=1, le=MAX_KEEPALIVE_COUNT,
                                        description="Unanswered keep-alives before the connection counts as lost.")
    compression: bool = Field(False, description="Compress the connection (helps on slow links with big models).")
    address_family: Literal["any", "inet", "inet6"] = Field("any", description="IPv4 only (inet), IPv6 only (inet6).")
    command_timeout_s: Seconds = Field(120.0, description="Limit for each setup/cleanup command on the target.")
    remote_tmp: RemoteDir = Field("/tmp", description="Where the private temp dir is made (mktemp -d).")
    options: list[RejectedSshOption] = Field(
        default_factory=list, exclude=True,
        description="Not accepted: free-form ssh options could run local commands; each entry is an error naming "
                    "the typed field to use.",
    )


class AdbSettings(Strict):
    """An Android device over adb: push, `adb shell`, pull nothing, remove what was pushed."""

    kind: Literal["adb"] = "adb"
    serial: str | None = Field(None, pattern=r"^[A-Za-z0-9_.:][A-Za-z0-9_.:-]{0,127}$",
                               description="adb -s SERIAL (default: the only connected device).")
    adb: AdbProgram = Field("adb", description="The adb binary: a command name or an absolute path.")
    remote_dir: RemoteDir = Field("/data/local/tmp", description="Writable folder on the device.")
    benchmark_model: LocalPath | None = Field(
        None, description="Local path of an Android benchmark_model binary to push (runtime: benchmark_model).",
    )
    python: RemoteWord | None = Field(
        None, description="A Python on the device (e.g. Termux) to run the agent (runtime: ai-edge-litert/tflite-runtime).",
    )
    command_timeout_s: Seconds = 120.0


TransportSettings = Annotated[LocalSettings | QemuSettings | SshSettings | AdbSettings, Field(discriminator="kind")]
TRANSPORT_KINDS = ("local", "qemu", "ssh", "adb")


class DeviceProfile(Strict):
    name: str = Field(pattern=NAME_PATTERN, max_length=NAME_MAX_LENGTH)
    description: PlainText = ""
    arch: Literal["x86_64", "aarch64", "armv7l"] = "x86_64"
    cores: int | None = Field(None, ge=1, le=MAX_CORES)
    memory_mb: int | None = Field(None, ge=1, le=MAX_MEMORY_MB)
    transport: TransportSettings = Field(default_factory=LocalSettings)
    runtime: Runtime = Field(default_factory=Runtime)
    threads: int = Field(1, ge=1, le=256)
    pin_cores: list[Annotated[int, Field(ge=0, lt=MAX_CORES)]] | None = Field(
        None, min_length=1, max_length=MAX_CORES, description="CPU cores to pin the agent to (taskset).",
    )
    allow_flex: bool = Field(False, description="Whether Flex (SELECT_TF_OPS) ops are available.")
    allowed_ops: list[Annotated[str, Field(pattern=r"^[A-Z][A-Z0-9_]{0,63}$")]] | None = Field(
        None, description="If set, builtin ops the device's runtime supports; others are refused.",
    )
    budget: Budget = Field(default_factory=Budget)

    @model_validator(mode="after")
    def _consistent(self):
        transport = self.transport
        kind = transport.kind
        if self.runtime.name == "benchmark_model":
            if not isinstance(transport, AdbSettings):
                raise ValueError("runtime benchmark_model is supported on adb devices only (use ai-edge-litert elsewhere)")
            if not transport.benchmark_model:
                raise ValueError("runtime benchmark_model needs transport.benchmark_model: the local path of the binary")
        elif isinstance(transport, AdbSettings) and not transport.python:
            raise ValueError(f"runtime {self.runtime.name} over adb needs transport.python (a Python on the device)")
        if kind == "qemu" and self.arch != "aarch64":
            raise ValueError("the qemu transport emulates aarch64: set arch: aarch64")
        if self.pin_cores and self.cores and max(self.pin_cores) >= self.cores:
            raise ValueError(f"pin_cores {self.pin_cores} names a core >= cores ({self.cores})")
        if self.pin_cores and kind not in ("local", "ssh", "adb"):
            raise ValueError(f"pin_cores is not supported by the {kind} transport")
        if self.pin_cores and self.threads > len(self.pin_cores):
            raise ValueError(f"threads ({self.threads}) exceeds the {len(self.pin_cores)} pinned cores")
        return self

    @property
    def emulated(self) -> bool:
        return self.transport.kind == "qemu"


def device_dirs() -> list[Path]:
    """Where device files are found, first wins: $EDGE_PIPELINE_DEVICES (os.pathsep list), ./devices,
    then the built-in catalog shipped in the package."""
    dirs = [Path(p) for p in os.environ.get("EDGE_PIPELINE_DEVICES", "").split(os.pathsep) if p]
    dirs += [working_dir_devices(), BUILTIN_DEVICES]
    seen, out = set(), []
    for d in dirs:
        key = d.resolve()
        if key not in seen and d.is_dir():
            seen.add(key)
            out.append(d)
    return out


def working_dir_devices() -> Path:
    return Path.cwd() / "devices"


_ANNOUNCED: set[Path] = set()


def announce_shadowing(path: Path) -> None:
    """One `warning:` line when a file from ./devices replaces a built-in device of the same name:
    such a file may come with a cloned repository rather than from the user (once per process)."""
    builtin = BUILTIN_DEVICES / path.name
    resolved = path.resolve()
    if resolved.parent != working_dir_devices().resolve() or not builtin.is_file() or builtin.resolve() == resolved:
        return
    if resolved not in _ANNOUNCED:
        _ANNOUNCED.add(resolved)
        print(f"warning: {path} (from ./devices in the working directory) replaces the built-in device "
              f"{path.stem!r} ({builtin}); read it before use, or rename it", file=sys.stderr)


def _error_location(loc: tuple) -> tuple:
    """Drop pydantic's union tag from a location: ('transport', 'ssh', 'host') -> ('transport', 'host')."""
    if len(loc) >= 2 and loc[0] == "transport" and loc[1] in TRANSPORT_KINDS:
        return (loc[0],) + tuple(loc[2:])
    return loc


def _from_working_dir(path: Path) -> bool:
    """True for a file picked up from ./devices (which may come with a cloned repository), unless
    ./devices is the built-in catalog itself (the checkout's symlink)."""
    folder = path.resolve().parent
    return folder == working_dir_devices().resolve() and folder != BUILTIN_DEVICES.resolve()


# Transport fields that name a program run on this machine.
_LOCAL_PROGRAMS = {"local": "python", "qemu": "qemu", "adb": "adb"}


def _check_local_programs(device: DeviceProfile, path: Path, located) -> None:
    """A file found implicitly in ./devices may name local programs only by command name: a path
    there would run a program of the repository's choosing as soon as the device is used."""
    field = _LOCAL_PROGRAMS.get(device.transport.kind)
    value = getattr(device.transport, field, None) if field else None
    if value and "/" in value:
        loc = ("transport", field)
        raise UserError(
            f"{path}:{located.line_of(loc) or 1}: {dotted(loc)}: {value!r} is a path, and device files found in ./devices "
            f"may name local programs only by command name; pass the file with --device-file to use a path"
        )


def load_device_file(path: str | Path, *, implicit: bool = False) -> DeviceProfile:
    """Load and validate one device file. `implicit`: found by name in the catalog's folders (not
    given on the command line), so a file from ./devices gets the stricter rules."""
    path = Path(path)
    text = read_text_bounded(path, DEVICE_FILE_LIMIT, "device file (YAML)")
    announce_shadowing(path)
    located = load_located(text, str(path))
    if not isinstance(located.data, dict):
        raise UserError(f"{path}:1: a device file is a mapping (name, arch, transport, ...)")
    data = dict(located.data)
    data.setdefault("name", path.stem)
    try:
        device = DeviceProfile.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = _error_location(tuple(err["loc"]))
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "union_tag_invalid":
            message = f"transport.kind must be one of {', '.join(TRANSPORT_KINDS)}"
        # Our own checks (value_error) quote the value already; pydantic's built-in ones do not.
        quoted = err["type"] == "value_error" or isinstance(err.get("input"), (dict, list))
        got = f", got {err['input']!r}" if loc and not quoted else ""
        raise UserError(f"{path}:{located.line_of(loc) or 1}: {dotted(loc)}: {message}{got}") from None
    if implicit and _from_working_dir(path):
        _check_local_programs(device, path, located)
    return device


def catalog() -> dict[str, Path]:
    """Device name -> file, first directory wins (so ./devices overrides the built-ins)."""
    found: dict[str, Path] = {}
    for folder in device_dirs():
        for file in sorted(folder.glob("*.yaml")):
            found.setdefault(file.stem, file)
    return found


def get_device(name_or_file: str) -> DeviceProfile:
    if name_or_file.endswith((".yaml", ".yml")) or os.sep in name_or_file:
        return load_device_file(name_or_file)
    files = catalog()
    if name_or_file not in files:
        raise UserError(f"unknown device {name_or_file!r}; known: {', '.join(sorted(files)) or 'none'} (devices/*.yaml)")
    return load_device_file(files[name_or_file], implicit=True)
