"""Device profiles: one YAML file per device (devices/*.yaml), validated by a strict schema.

A profile says what the device is (arch, cores, memory), how to reach it (`transport`, a union
discriminated by `kind`: local | qemu | ssh | adb, each with its own typed settings), which runtime
measures there, with how many threads, which ops it can run, and how long to measure (`budget`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal, Union

from pydantic import Field, ValidationError, field_validator, model_validator

from ..errors import UserError
from ..stages.base import NAME_PATTERN, Strict
from ..yamlio import load_located

REPO_DEVICES = Path(__file__).resolve().parents[2] / "devices"


class Budget(Strict):
    """How long to measure. A run that misses a minimum or is too noisy is marked invalid."""

    warmup_runs: int = Field(5, ge=0)
    min_runs: int = Field(50, ge=1)
    min_seconds: float = Field(1.0, ge=0)
    max_seconds: float = Field(60.0, gt=0)
    max_rel_std: float = Field(0.25, gt=0, description="Largest acceptable robust std (1.4826 MAD) / median.")

    @model_validator(mode="after")
    def _ordered(self):
        if self.min_seconds > self.max_seconds:
            raise ValueError(f"min_seconds ({self.min_seconds}) must be <= max_seconds ({self.max_seconds})")
        return self


RuntimeName = Literal["ai-edge-litert", "tflite-runtime", "benchmark_model"]


class Runtime(Strict):
    """What measures on the device. `benchmark_model` is TFLite's C++ tool (adb devices only)."""

    name: RuntimeName = "ai-edge-litert"
    version: str | None = Field(None, description="Expected version; a different one on the device is reported, not fatal.")


class LocalTransport(Strict):
    """This machine: the agent in a fresh subprocess (optionally pinned with taskset)."""

    kind: Literal["local"] = "local"
    python: str | None = Field(None, description="Interpreter that runs the agent (default: this one).")


class QemuTransport(Strict):
    """An aarch64 Debian sysroot run under qemu-aarch64-static (user mode). Latency is emulated."""

    kind: Literal["qemu"] = "qemu"
    suite: str = Field("bookworm", pattern=r"^[a-z]+$", description="Debian release of the sysroot.")
    python_version: str = Field("3.11", pattern=r"^3\.\d+$", description="Python of that release (bookworm: 3.11).")
    packages: list[str] = Field(
        default_factory=lambda: ["ai-edge-litert==2.1.0", "numpy==1.26.4"],
        min_length=1, description="aarch64 wheels unpacked onto the sysroot's PYTHONPATH.",
    )
    cache_dir: str | None = Field(None, description="Default: $EDGE_PIPELINE_CACHE or ~/.cache/edge-pipeline.")
    qemu: str = Field("qemu-aarch64-static", description="The user-mode emulator binary.")


class SshTransport(Strict):
    """A board over OpenSSH: key auth only (BatchMode), host keys checked against known_hosts."""

    kind: Literal["ssh"] = "ssh"
    host: str = Field(min_length=1, description="Host name or address (or an alias from ~/.ssh/config).")
    user: str | None = None
    port: int = Field(22, ge=1, le=65535)
    identity_file: str | None = Field(None, description="Private key (default: ssh's own choice).")
    known_hosts_file: str | None = Field(None, description="Default: ssh's own (~/.ssh/known_hosts).")
    strict_host_key_checking: Literal["yes", "accept-new"] = Field(
        "yes", description="'yes' (default) refuses unknown hosts; 'accept-new' trusts a first-seen key, never a changed one.",
    )
    python: str = Field("python3", min_length=1, description="The target's Python (3.8+), with numpy and a TFLite runtime.")
    connect_timeout_s: int = Field(10, ge=1, le=300)
    command_timeout_s: float = Field(120.0, gt=0, description="Limit for each setup/cleanup command on the target.")
    remote_tmp: str = Field("/tmp", min_length=1, description="Where the private temp dir is made (mktemp -d).")
    options: list[str] = Field(default_factory=list, description="Extra `-o Key=Value` options for ssh/scp.")

    @field_validator("options")
    @classmethod
    def _options_are_key_value(cls, value: list[str]) -> list[str]:
        for option in value:
            key = option.split("=", 1)[0].strip().lower()
            if "=" not in option:
                raise ValueError(f"option {option!r} must be Key=Value (e.g. ServerAliveInterval=15)")
            if key in ("stricthostkeychecking", "batchmode", "userknownhostsfile"):
                raise ValueError(f"option {option!r}: use the transport's own fields for host-key checking")
        return value


class AdbTransport(Strict):
    """An Android device over adb: push, `adb shell`, pull nothing, remove what was pushed."""

    kind: Literal["adb"] = "adb"
    serial: str | None = Field(None, description="adb -s SERIAL (default: the only connected device).")
    adb: str = Field("adb", description="The adb binary.")
    remote_dir: str = Field("/data/local/tmp", min_length=1, description="Writable folder on the device.")
    benchmark_model: str | None = Field(
        None, description="Local path of an Android benchmark_model binary to push (runtime: benchmark_model).",
    )
    python: str | None = Field(
        None, description="A Python on the device (e.g. Termux) to run the agent (runtime: ai-edge-litert/tflite-runtime).",
    )
    command_timeout_s: float = Field(120.0, gt=0)


Transport = Annotated[Union[LocalTransport, QemuTransport, SshTransport, AdbTransport], Field(discriminator="kind")]
TRANSPORT_KINDS = ("local", "qemu", "ssh", "adb")


class DeviceProfile(Strict):
    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    arch: Literal["x86_64", "aarch64", "armv7l"] = "x86_64"
    cores: int | None = Field(None, ge=1)
    memory_mb: int | None = Field(None, ge=1)
    transport: Transport = Field(default_factory=LocalTransport)
    runtime: Runtime = Field(default_factory=Runtime)
    threads: int = Field(1, ge=1, le=256)
    pin_cores: list[int] | None = Field(None, min_length=1, description="CPU cores to pin the agent to (taskset).")
    allow_flex: bool = Field(False, description="Whether Flex (SELECT_TF_OPS) ops are available.")
    allowed_ops: list[str] | None = Field(None, description="If set, builtin ops the device's runtime supports; others are refused.")
    budget: Budget = Field(default_factory=Budget)

    @model_validator(mode="after")
    def _consistent(self):
        kind = self.transport.kind
        if self.runtime.name == "benchmark_model":
            if kind != "adb":
                raise ValueError("runtime benchmark_model is supported on adb devices only (use ai-edge-litert elsewhere)")
            if not self.transport.benchmark_model:
                raise ValueError("runtime benchmark_model needs transport.benchmark_model: the local path of the binary")
        elif kind == "adb" and not self.transport.python:
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
    """Where device files are found: $EDGE_PIPELINE_DEVICES (os.pathsep list), ./devices, the repo's devices/."""
    dirs = [Path(p) for p in os.environ.get("EDGE_PIPELINE_DEVICES", "").split(os.pathsep) if p]
    dirs += [Path.cwd() / "devices", REPO_DEVICES]
    seen, out = set(), []
    for d in dirs:
        key = d.resolve()
        if key not in seen and d.is_dir():
            seen.add(key)
            out.append(d)
    return out


def _error_location(loc: tuple) -> tuple:
    """Drop pydantic's union tag from a location: ('transport', 'ssh', 'host') -> ('transport', 'host')."""
    if len(loc) >= 2 and loc[0] == "transport" and loc[1] in TRANSPORT_KINDS:
        return (loc[0],) + tuple(loc[2:])
    return loc


def load_device_file(path: str | Path) -> DeviceProfile:
    from ..yamlio import dotted

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: device file not found")
    located = load_located(path.read_text(encoding="utf-8"), str(path))
    if not isinstance(located.data, dict):
        raise UserError(f"{path}:1: a device file is a mapping (name, arch, transport, ...)")
    data = dict(located.data)
    data.setdefault("name", path.stem)
    try:
        return DeviceProfile.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = _error_location(tuple(err["loc"]))
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "union_tag_invalid":
            message = f"transport.kind must be one of {', '.join(TRANSPORT_KINDS)}"
        got = f", got {err['input']!r}" if loc and not isinstance(err.get("input"), dict) else ""
        raise UserError(f"{path}:{located.line_of(loc) or 1}: {dotted(loc)}: {message}{got}") from None


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
    return load_device_file(files[name_or_file])
