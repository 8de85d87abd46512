"""Profile one model on one device: a timing run and a separate memory run, merged into the
profile JSON of DESIGN.md."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..artifacts import sha256_file
from ..ui import status_line
from .devices import DeviceProfile
from .transports import make_transport


def _round(value: Any, digits: int = 4) -> Any:
    if isinstance(value, float):
        return round(value, digits)
    if isinstance(value, dict):
        return {k: _round(v, digits) for k, v in value.items()}
    return value


def profile_model(model: Path, device: DeviceProfile, threads: int | None = None) -> dict[str, Any]:
    transport = make_transport(device)
    budget = device.budget
    threads = threads or device.threads
    timing_args = [
        "--mode", "timing", "--threads", str(threads), "--runtime", device.runtime.name,
        "--warmup", str(budget.warmup_runs), "--min-runs", str(budget.min_runs),
        "--min-seconds", str(budget.min_seconds), "--max-seconds", str(budget.max_seconds),
        "--max-rel-std", str(budget.max_rel_std),
    ]
    timeout = budget.max_seconds * 3 + 120  # init and warmup are not bounded by max_seconds
    with status_line(f"profiling {model.name} on {device.name}: timing"):
        timing = transport.run_agent(model, timing_args, timeout)
    with status_line(f"profiling {model.name} on {device.name}: memory"):
        memory = transport.run_agent(model, ["--mode", "memory", "--threads", str(threads), "--runtime", device.runtime.name], timeout)
    return {
        "device": device.name, "model": model.name, "model_sha256": sha256_file(model),
        "model_size_bytes": model.stat().st_size, "runtime": timing["runtime"], "threads": threads,
        "arch": timing["arch"], "cpu": timing.get("cpu"), "cores": timing.get("cores"),
        "init_ms": _round(timing["init_ms"]), "first_inference_ms": _round(timing["first_inference_ms"]),
        "warmup": _round(timing["warmup"]), "latency_ms": _round(timing["latency_ms"]),
        "peak_rss_mb": _round(memory["peak_rss_mb"], 2), "valid": timing["valid"],
        "invalid_reasons": timing["invalid_reasons"],
    }
