"""Device profiles: one YAML file per device (devices/*.yaml), validated by a strict schema."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, model_validator

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


class Runtime(Strict):
    name: Literal["ai-edge-litert", "tflite-runtime", "benchmark_model"] = "ai-edge-litert"
    version: str | None = None


class LocalTransport(Strict):
    kind: Literal["local"] = "local"
    python: str | None = Field(None, description="Interpreter that runs the agent (default: this one).")


class DeviceProfile(Strict):
    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    arch: Literal["x86_64", "aarch64", "armv7l"] = "x86_64"
    cores: int | None = Field(None, ge=1)
    memory_mb: int | None = Field(None, ge=1)
    transport: LocalTransport = Field(default_factory=LocalTransport)
    runtime: Runtime = Field(default_factory=Runtime)
    threads: int = Field(1, ge=1, le=256)
    pin_cores: list[int] | None = Field(None, description="CPU cores to pin the agent to (taskset).")
    allow_flex: bool = Field(False, description="Whether Flex (SELECT_TF_OPS) ops are available.")
    budget: Budget = Field(default_factory=Budget)


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


def load_device_file(path: str | Path) -> DeviceProfile:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: device file not found")
    located = load_located(path.read_text(encoding="utf-8"), str(path))
    data = located.data if isinstance(located.data, dict) else {}
    data.setdefault("name", path.stem)
    try:
        return DeviceProfile.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(err["loc"])
        from ..yamlio import dotted

        message = err["msg"].removeprefix("Value error, ")
        raise UserError(f"{path}:{located.line_of(loc) or 1}: {dotted(loc)}: {message}, got {err.get('input')!r}") from None


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
