"""A device's latency table: measured milliseconds of single TFLite ops, keyed by op signature.

One table per device profile and thread count, for one runtime version: `<cache>/latency/<device>-<N>t.json`
(`<cache>` = $EDGE_PIPELINE_CACHE or ~/.cache/edge-pipeline). Entries are measured on the device
itself, through its own transport (host, qemu, ssh, adb with the agent), by the agent's `ops` mode:
each single-op model (`opmodels`) timed in interleaved rounds. The table only grows: `measure` times
the signatures it does not hold yet, in chunks, saving after each chunk (a killed build keeps what
it measured). When the device reports another runtime version, the old table is set aside
(`<device>-<N>t@<version>.json`) and a new one started: kernels change between versions.

Concurrent builders (two runs, a sweep's jobs) serialize on the table's flock, so an op is measured
once and nobody's entries are lost.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import procs
from ..artifacts import atomic_write_json, read_json
from ..errors import PipelineError, UserError
from ..filelock import flocked
from ..ui import console, progress
from .devices import DeviceProfile
from .emulator import cache_root
from .opmodels import empty_model
from .transports import make_transport

TABLE_FORMAT = 1
EMPTY_KEY = "__empty__"  # one trivial op: what an invoke costs with no work in it
CHUNK = 150  # single-op models per agent call (a killed build loses at most one chunk)
ROUNDS, MIN_RUNS, MIN_SECONDS = 3, 10, 0.02
# Under emulation, interleaving many models makes qemu translate their kernels again and again (measured:
# one 1x1 conv timed 15.4 ms interleaved, 9.0 ms alone): there each file is timed in one round.
EMULATED_ROUNDS, EMULATED_WARMUP = 1, 5
MAX_MODELS = 500


@dataclass
class LatencyTable:
    path: Path
    device: str
    threads: int
    runtime: dict[str, Any] = field(default_factory=dict)
    arch: str | None = None
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)
    # whole models measured on the device: sha256 -> {"weights": "float"|"int8", "weight_mb", "raw_ms",
    # "measured_ms"}; what `predict.calibration` learns the in-model cost of weights from
    models: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.device}@{self.runtime.get('version') or 'unknown'}"

    @property
    def empty_ms(self) -> float | None:
        entry = self.entries.get(EMPTY_KEY)
        return entry.get("ms") if entry else None

    def ms(self, key: str) -> float | None:
        entry = self.entries.get(key)
        return entry.get("ms") if entry else None

    def has(self, key: str) -> bool:
        return key in self.entries

    def to_json(self) -> dict[str, Any]:
        return {"format": TABLE_FORMAT, "device": self.device, "threads": self.threads, "runtime": self.runtime,
                "arch": self.arch, "entries": self.entries, "models": self.models}


def table_path(device: DeviceProfile, threads: int | None = None) -> Path:
    return cache_root() / "latency" / f"{device.name}-{threads or device.threads}t.json"


def load_table(device: DeviceProfile, threads: int | None = None) -> LatencyTable | None:
    """The device's table, or None when there is none yet (or it is damaged: then it is set aside)."""
    path = table_path(device, threads)
    if not path.exists():
        return None
    return _read(path, device, threads or device.threads)


def _read(path: Path, device: DeviceProfile, threads: int) -> LatencyTable | None:
    try:
        data = read_json(path)
        if not isinstance(data, dict) or data.get("format") != TABLE_FORMAT or not isinstance(data.get("entries"), dict):
            raise UserError(f"{path}: not a latency table of format {TABLE_FORMAT}")
        entries = {str(k): v for k, v in data["entries"].items() if isinstance(v, dict) and _valid_entry(v)}
        raw_models = data.get("models")
        models = {str(k): v for k, v in (raw_models if isinstance(raw_models, dict) else {}).items()
                  if isinstance(v, dict) and _valid_model(v)}
    except UserError as exc:
        aside = path.with_name(path.name + ".damaged")
        os.replace(path, aside)
        console.print(f"[yellow]warning:[/] {exc}; set aside as {aside.name}, a new table is measured")
        return None
    return LatencyTable(path, device.name, threads, dict(data.get("runtime") or {}), data.get("arch"), entries, models)


def _valid_entry(entry: dict[str, Any]) -> bool:
    ms = entry.get("ms")
    return isinstance(entry.get("error"), str) or (isinstance(ms, (int, float)) and 0 <= ms < 1e7)


def _valid_model(model: dict[str, Any]) -> bool:
    numbers = [model.get(k) for k in ("weight_mb", "raw_ms", "measured_ms")]
    return model.get("weights") in ("float", "int8") and all(isinstance(v, (int, float)) and 0 <= v < 1e7 for v in numbers)


def record_model(device: DeviceProfile, sha256: str, sample: dict[str, Any], threads: int | None = None) -> None:
    """Keep a whole model's measurement beside its raw prediction (newest MAX_MODELS, one per file)."""
    path = table_path(device, threads)
    if not path.exists() or not _valid_model(sample):
        return
    with flocked(path.with_name(path.name + ".lock")):
        table = _read(path, device, threads or device.threads)
        if table is None:
            return
        table.models.pop(sha256, None)
        table.models[sha256] = {k: (round(v, 6) if isinstance(v, float) else v) for k, v in sample.items()}
        while len(table.models) > MAX_MODELS:
            table.models.pop(next(iter(table.models)))
        atomic_write_json(path, table.to_json())


def measure(device: DeviceProfile, models: dict[str, Callable[[], bytes]], threads: int | None = None,
            what: str = "ops") -> LatencyTable:
    """Make sure the device's table holds every key of `models` (key -> a function making that op's
    single-op model); time the missing ones on the device. Returns the table."""
    threads = threads or device.threads
    if device.runtime.name == "benchmark_model":
        raise UserError(f"device {device.name}: the latency table needs the agent (a Python with a TFLite runtime on "
                        "the device); benchmark_model times one file per run. Set transport.python for this device")
    path = table_path(device, threads)
    path.parent.mkdir(parents=True, exist_ok=True)
    makers = {EMPTY_KEY: empty_model, **models}
    with flocked(path.with_name(path.name + ".lock")):
        table = (_read(path, device, threads) if path.exists() else None) or LatencyTable(path, device.name, threads)
        while True:  # twice only when the device's runtime changed under an existing table
            missing = [k for k in makers if not table.has(k)]
            if not missing:
                return table
            label = table.name if table.runtime else device.name
            with progress(f"latency table {label}: timing {len(missing)} {what}", len(missing)) as bar:
                for start in range(0, len(missing), CHUNK):
                    chunk = missing[start:start + CHUNK]
                    result = _time_chunk(device, threads, {k: makers[k] for k in chunk})
                    table = _merge(table, result, chunk, device, threads)
                    atomic_write_json(path, table.to_json())
                    bar.advance(len(chunk))


def _time_chunk(device: DeviceProfile, threads: int, makers: dict[str, Callable[[], bytes]]) -> dict[str, Any]:
    import json

    files = {f"op{i:05d}.tflite": key for i, key in enumerate(makers)}
    with procs.temp_dir("latency") as tmp:
        bundle = tmp / "ops.zip"
        with zipfile.ZipFile(bundle, "w", compression=zipfile.ZIP_STORED) as z:
            rounds = EMULATED_ROUNDS if device.emulated else ROUNDS
            z.writestr("ops.json", json.dumps({"files": list(files), "rounds": rounds, "min_runs": MIN_RUNS,
                                               "min_seconds": MIN_SECONDS}))
            for name, key in files.items():
                z.writestr(name, makers[key]())
        timeout = 300 + len(files) * ROUNDS * (MIN_SECONDS + 0.05) * (100 if device.emulated else 3)
        with make_transport(device).session(bundle) as session:
            warmup = EMULATED_WARMUP if device.emulated else 3
            result = session.agent(["--mode", "ops", "--threads", str(threads), "--runtime", device.runtime.name,
                                    "--warmup", str(warmup)], timeout)
    if not result.get("ok", True) and "ops" not in result:
        raise PipelineError(f"latency table on {device.name}: {result.get('error')}")
    ops = result.get("ops") or {}
    return {"runtime": result.get("runtime") or {}, "arch": result.get("arch"),
            "entries": {key: ops.get(name, {"error": "not timed"}) for name, key in files.items()}}


def _merge(table: LatencyTable, result: dict[str, Any], chunk: list[str], device: DeviceProfile,
           threads: int) -> LatencyTable:
    runtime = {k: result["runtime"].get(k) for k in ("name", "version")}
    if table.runtime and table.runtime != runtime:  # another runtime: its kernels differ, start over
        aside = table.path.with_name(f"{table.path.stem}@{table.runtime.get('version')}.json")
        if table.path.exists():
            os.replace(table.path, aside)
        console.print(f"  latency table: the device now runs {runtime.get('name')} {runtime.get('version')}; "
                      f"the table of {table.runtime.get('version')} is kept as {aside.name}")
        table = LatencyTable(table.path, device.name, threads)
    table.runtime, table.arch = runtime, result.get("arch")
    for key in chunk:
        entry = result["entries"][key]
        table.entries[key] = {k: (round(v, 6) if isinstance(v, float) else v) for k, v in entry.items()}
    return table
