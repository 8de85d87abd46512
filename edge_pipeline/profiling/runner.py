"""Profile one model on one device: a timing run and a separate memory run (each a fresh process),
optionally the outputs on real input samples compared with this host's, merged into the profile
JSON of DESIGN.md (plus `cpu`, `cores`, `emulated`, `op_profile`, `outputs_check`, `notes`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import procs
from ..artifacts import sha256_file
from ..errors import UserError
from ..ui import status_line
from .devices import DeviceProfile
from .transports import make_transport

EMULATED_NOTE = "latency is emulated (qemu user mode): compare models on this device only, never as device time"


def _round(value: Any, digits: int = 4) -> Any:
    if isinstance(value, float):
        return round(value, digits)
    if isinstance(value, dict):
        return {k: _round(v, digits) for k, v in value.items()}
    return value


def check_ops(model: Path, device: DeviceProfile) -> dict[str, Any]:
    """Refuse a model the device cannot run (Flex ops, ops outside `allowed_ops`) before any device work."""
    from ..convert.inspect import inspect_tflite

    info = inspect_tflite(model)  # a bounded read: a device, FIFO or oversized file is refused here
    if info["flex_ops"] and not device.allow_flex:
        raise UserError(f"{model.name}: uses Flex ops {', '.join(info['flex_ops'])}, which device {device.name} cannot run "
                        "(allow_flex: false); convert without SELECT_TF_OPS")
    if device.allowed_ops is not None:
        extra = sorted(set(info["ops"]) - set(device.allowed_ops) - set(info["flex_ops"]))
        if extra:
            raise UserError(f"{model.name}: ops {', '.join(extra)} are not in device {device.name}'s allowed_ops")
    return info


def _timing_args(device: DeviceProfile, threads: int) -> list[str]:
    b = device.budget
    return [
        "--mode", "timing", "--threads", str(threads), "--runtime", device.runtime.name,
        "--warmup", str(b.warmup_runs), "--min-runs", str(b.min_runs), "--min-seconds", str(b.min_seconds),
        "--max-seconds", str(b.max_seconds), "--max-rel-std", str(b.max_rel_std),
    ]


def compare_outputs(values, reference, output_scale: float | None) -> dict[str, Any]:
    """Device outputs vs the host's on the same inputs: top-1 agreement and the largest difference.
    They match when every top-1 agrees and no value differs by more than one quantization step of
    the output (int8) or 1e-4 of the output range (float)."""
    import numpy as np

    got, ref = np.asarray(values, np.float32), np.asarray(reference, np.float32)
    if got.shape != ref.shape:
        return {"samples": int(len(got)), "match": False, "reason": f"shape {list(got.shape)} != host {list(ref.shape)}"}
    diff = float(np.max(np.abs(got - ref))) if got.size else 0.0
    agree = float(np.mean(np.argmax(got, -1) == np.argmax(ref, -1))) if got.size else 1.0
    tolerance = output_scale * 1.0001 if output_scale else 1e-4 * max(float(np.max(np.abs(ref))), 1e-6)
    return {"samples": int(len(got)), "reference": "host", "top1_agreement": agree, "max_abs_diff": diff,
            "tolerance": tolerance, "match": bool(agree == 1.0 and diff <= tolerance)}


def host_outputs(model: Path, inputs: Path) -> list:
    """The reference: this host's agent (ai-edge-litert from the venv) on the same inputs."""
    from .transports.local import LocalTransport

    host = DeviceProfile(name="host")
    with LocalTransport(host).session(model, inputs) as session:
        return session.agent(["--mode", "outputs", "--threads", "1"], 600)["values"]


def profile_model(
    model: Path, device: DeviceProfile, threads: int | None = None, samples=None,
) -> dict[str, Any]:
    """Measure `model` on `device`. `samples` (N,H,W,C float, normalized like the model's input)
    turns on the outputs check against this host."""
    import numpy as np

    model = Path(model)
    info = check_ops(model, device)
    transport = make_transport(device)
    threads = threads or device.threads
    timeout = device.budget.max_seconds * 3 + 300  # init, warmup and emulator start are not bounded by max_seconds
    where = f"{model.name} on {device.name}"
    with procs.temp_dir("profile") as tmp:
        inputs = None
        if samples is not None and device.runtime.name != "benchmark_model":
            inputs = tmp / "inputs.npy"
            np.save(inputs, np.ascontiguousarray(samples, np.float32))
        # No spinner around opening the session: a first qemu use builds the emulator with its own.
        with transport.session(model, inputs) as session:
            if device.runtime.name == "benchmark_model":
                profile = _benchmark_model_profile(session, where, timeout)
            else:
                profile = _agent_profile(session, device, threads, where, timeout, inputs is not None)
        if inputs is not None:
            with status_line(f"profiling {where}: host reference outputs"):
                reference = host_outputs(model, inputs)
            scale = (info["outputs"][0].get("quantization") or {}).get("scale")
            scale = scale[0] if isinstance(scale, list) else scale
            profile["outputs_check"] = compare_outputs(profile.pop("_values"), reference, scale)

    notes = list(profile.pop("notes", []))
    runtime = profile["runtime"]
    if device.runtime.version and runtime.get("version") not in (None, device.runtime.version):
        notes.append(f"runtime version {runtime.get('version')} differs from the device file's {device.runtime.version}")
    if device.emulated:
        notes.insert(0, EMULATED_NOTE)
        # /proc/cpuinfo under qemu user mode is the host's: say so instead of naming a fake ARM CPU.
        profile["cpu"] = f"emulated aarch64 (qemu user mode on {profile.get('cpu') or 'this host'})"
    return {
        "device": device.name, "model": model.name, "model_sha256": sha256_file(model),
        "model_size_bytes": model.stat().st_size, "threads": threads, "transport": device.transport.kind,
        "emulated": device.emulated, **profile,
        "budget": device.budget.model_dump(), "notes": notes,
    }


def _agent_profile(session, device, threads, where, timeout, with_outputs) -> dict[str, Any]:
    with status_line(f"profiling {where}: timing"):
        timing = session.agent(_timing_args(device, threads), timeout)
    with status_line(f"profiling {where}: memory (separate run)"):
        memory = session.agent(["--mode", "memory", "--threads", str(threads), "--runtime", device.runtime.name], timeout)
    out: dict[str, Any] = {
        "runtime": timing["runtime"], "arch": timing["arch"], "cpu": timing.get("cpu"), "cores": timing.get("cores"),
        "python": timing.get("python"), "affinity": timing.get("affinity"),
        "init_ms": _round(timing["init_ms"]), "first_inference_ms": _round(timing["first_inference_ms"]),
        "warmup": _round(timing["warmup"]), "latency_ms": _round(timing["latency_ms"]),
        "rel_std": _round(timing.get("rel_std")), "peak_rss_mb": _round(memory["peak_rss_mb"], 2),
        "valid": timing["valid"], "invalid_reasons": timing["invalid_reasons"], "op_profile": timing.get("op_profile"),
    }
    if with_outputs:
        with status_line(f"profiling {where}: outputs on real inputs"):
            out["_values"] = session.agent(["--mode", "outputs", "--threads", str(threads)], timeout)["values"]
    return out


def _benchmark_model_profile(session, where, timeout) -> dict[str, Any]:
    device = session.transport.device
    with status_line(f"profiling {where}: benchmark_model timing"):
        timing = session.benchmark("timing", timeout)
    with status_line(f"profiling {where}: benchmark_model memory (separate run)"):
        memory = session.benchmark("memory", timeout)
    with status_line(f"profiling {where}: benchmark_model per-op profile"):
        ops = session.benchmark("ops", timeout)
    return benchmark_profile_fields(timing, memory, ops, device)


def benchmark_profile_fields(timing: dict, memory: dict, ops: dict | None, device: DeviceProfile) -> dict[str, Any]:
    """Parsed benchmark_model runs -> profile fields, validity judged against the device's budget."""
    lat = timing["latency_ms"]
    reasons = []
    if lat["runs"] is None or lat["mean"] is None:
        reasons.append("benchmark_model printed no timed-run statistics")
    else:
        if lat["runs"] < device.budget.min_runs:
            reasons.append(f"only {lat['runs']} timed runs (min_runs={device.budget.min_runs})")
        # benchmark_model prints no per-run times, so the noise check uses the plain std / mean.
        if lat["std"] is not None and lat["mean"] and lat["std"] / lat["mean"] > device.budget.max_rel_std:
            reasons.append(f"noisy: std/mean {lat['std'] / lat['mean']:.2f} > max_rel_std {device.budget.max_rel_std:g}")
    if lat.get("median") is None:
        lat = {**lat, "median": lat["mean"]}  # older benchmark_model versions print no median
    peak = memory.get("peak_memory_mb") or memory.get("memory_delta_mb")
    return {
        "runtime": {"name": "benchmark_model", "version": device.runtime.version}, "arch": device.arch,
        "cpu": None, "cores": device.cores, "init_ms": timing["init_ms"], "first_inference_ms": timing["first_inference_ms"],
        "warmup": timing["warmup"], "latency_ms": lat, "peak_rss_mb": peak, "valid": not reasons,
        "invalid_reasons": reasons, "op_profile": (ops or {}).get("op_profile"),
        "notes": ["peak memory is benchmark_model's footprint (approximate, per the tool)"] if peak is not None else [],
    }
