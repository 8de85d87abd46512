"""Adaptive inference of an early-exit chain on a device, through the agent's `adaptive` mode.

The chain travels as ONE file, so every transport moves it as it moves a model (copied, sha256
checked, removed afterwards): a zip with `chain.json` (segments, how to read their outputs, the
uncertainty measure, the thresholds to sweep, labels), the segment files, the plain model file of
the same precision and the test inputs (`inputs.npy`, NHWC float). The agent loads each file from
memory and runs, for the plain model, the chain with no exit ("worst case") and each threshold,
every input timed end to end (quantize, invoke, read outputs, uncertainty), in interleaved passes.

The profile's `early_exit` block (DESIGN.md): `thresholds` (accuracy, mean and p90 latency, exit
histogram for each), `chosen`, `plain_ms`, `worst_case_ms`; plus the precision, sample counts and
the ratios the report shows.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from .. import procs
from ..ui import status_line
from .devices import DeviceProfile
from .runner import check_ops
from .transports import make_transport

EXITS_FILE = "exits.json"  # next to metadata.json in the export folder
EXITS_DIR = "early_exit"  # the segment files, in the export folder
CHAIN_SPEC = "chain.json"
INPUTS = "inputs.npy"


def precision_threshold(description: dict[str, Any], precision: str) -> float:
    """The threshold a precision's chain runs with, chosen on validation from its own files' logits
    (a description written before thresholds were chosen per precision has torch's only)."""
    return float(description["precisions"][precision].get("threshold", description["threshold"]))


def pack_chain(dest: Path, export_dir: Path, description: dict[str, Any], precision: str, inputs: np.ndarray,
               labels: np.ndarray) -> Path:
    """The zip the agent's adaptive mode reads (see the module docstring)."""
    facts = description["precisions"][precision]
    segments = [{"file": f"segment{k}.tflite", "logits_output": s["logits_output"], "features_output": s["features_output"],
                 "features_layout": s.get("features_layout")} for k, s in enumerate(facts["segments"])]
    spec = {
        "segments": segments, "plain": "plain.tflite", "inputs": INPUTS, "labels": [int(v) for v in labels],
        "measure": description["measure"],
        "thresholds": sorted({float(t) for t in description["grid"]} | {precision_threshold(description, precision)}),
        "repeats": int(description["device"]["repeats"]),
    }
    with zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_STORED) as bundle:
        bundle.writestr(CHAIN_SPEC, json.dumps(spec))
        for k, segment in enumerate(facts["segments"]):
            bundle.write(export_dir / segment["file"], segments[k]["file"])
        bundle.write(export_dir / facts["plain_file"], "plain.tflite")
        with bundle.open(INPUTS, "w") as fh:
            np.save(fh, np.ascontiguousarray(inputs, np.float32), allow_pickle=False)
    return dest


def profile_chain(device: DeviceProfile, export_dir: Path, description: dict[str, Any], precision: str,
                  inputs: np.ndarray, labels: np.ndarray, threads: int) -> dict[str, Any]:
    """The profile's `early_exit` block for one precision on one device."""
    facts = description["precisions"][precision]
    if device.runtime.name == "benchmark_model":
        return {"precision": precision, "skipped": "benchmark_model runs one file per run; adaptive inference needs the "
                "agent (set transport.python for this device)"}
    for segment in facts["segments"]:
        check_ops(export_dir / segment["file"], device)
    transport = make_transport(device)
    runs = (2 + len(description["grid"])) * int(description["device"]["repeats"]) * len(inputs)
    timeout = device.budget.max_seconds * 3 + 300 + runs * 0.05  # emulated devices run ~100x slower than the host
    with procs.temp_dir("earlyexit") as tmp:
        bundle = pack_chain(tmp / "chain.zip", export_dir, description, precision, inputs, labels)
        with transport.session(bundle) as session, status_line(f"profiling the {precision} early-exit chain on {device.name}"):
            result = session.agent(["--mode", "adaptive", "--threads", str(threads), "--runtime", device.runtime.name,
                                    "--warmup", str(device.budget.warmup_runs)], timeout)
    return early_exit_block(result, description, precision)


def _r(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(float(value), digits)


def early_exit_block(result: dict[str, Any], description: dict[str, Any], precision: str) -> dict[str, Any]:
    """The agent's adaptive result in the profile contract's shape (DESIGN.md), with ratios."""
    plain, worst = result["plain"], result["worst_case"]
    rows = [{"threshold": t["threshold"], "accuracy": _r(t["accuracy"], 6), "mean_ms": _r(t["mean_ms"]),
             "p90_ms": _r(t["p90_ms"]), "exit_counts": t["exit_counts"]} for t in result["thresholds"]]
    chosen = precision_threshold(description, precision)
    row = next((r for r in rows if r["threshold"] == chosen), None)
    return {
        "precision": precision, "measure": description["measure"], "samples": result["samples"], "repeats": result["repeats"],
        "segments": len(description["precisions"][precision]["segments"]),
        "thresholds": rows, "chosen": chosen,
        "plain_ms": _r(plain["mean_ms"]), "plain_p90_ms": _r(plain["p90_ms"]), "plain_accuracy": _r(plain["accuracy"], 6),
        "worst_case_ms": _r(worst["mean_ms"]), "worst_case_p90_ms": _r(worst["p90_ms"]),
        "worst_case_accuracy": _r(worst["accuracy"], 6),
        # mean ms from an input's start to each exit's decision (the last: the final classifier's answer)
        "exit_ms": [_r(v) for v in result.get("exit_ms", [])],
        "speedup": _r(plain["mean_ms"] / row["mean_ms"], 3) if row and row["mean_ms"] else None,
        "worst_case_ratio": _r(worst["mean_ms"] / plain["mean_ms"], 3) if plain["mean_ms"] else None,
    }
