#!/usr/bin/env python
"""Measure what the quickstart pipeline costs and buys, in one run, as JSON.

- runs recipes/quickstart.yaml cold (fresh folder) and again (everything cached), timing both;
- exports the *baseline* (the train stage's model) to float32 TFLite the same way, and profiles it
  on the host next to the pipeline's float32 and int8 files;
- prints size and latency ratios, each stage's accuracy, TRANSPOSE counts and the int8 accuracy
  change against the baseline float model.

Usage: python benchmarks/quickstart.py [--out DIR] [--recipe recipes/quickstart.yaml]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "edge_pipeline.cli", *args], check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def export_baseline(run_dir: Path, work: Path) -> Path:
    """The train stage's model as float32 TFLite, through the pipeline's own export path."""
    import numpy as np

    from edge_pipeline.convert.nhwc import fold_flatten_linear
    from edge_pipeline.convert.onnx_export import export_onnx
    from edge_pipeline.convert.tflite_convert import convert_to_tflite
    from edge_pipeline.models.store import load_model

    model = load_model(run_dir / "01-train")
    shape = tuple(model.meta["input_shape"])
    folded, _ = fold_flatten_linear(model.module, shape)
    onnx_path = work / "baseline.onnx"
    export_onnx(folded, shape, onnx_path)
    calibration = np.load(run_dir / "05-quantize" / "calibration.npy")
    images01 = calibration * np.asarray(model.meta["std"], np.float32) + np.asarray(model.meta["mean"], np.float32)
    files = convert_to_tflite(onnx_path, work, ["float32"], images01, None)
    return files["float32"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default=str(REPO / "recipes" / "quickstart.yaml"))
    parser.add_argument("--out", help="run folder (default: a fresh temp folder, so the first run is cold)")
    args = parser.parse_args()

    from edge_pipeline.convert.inspect import inspect_tflite
    from edge_pipeline.profiling.devices import get_device
    from edge_pipeline.profiling.runner import profile_model

    tmp = Path(tempfile.mkdtemp(prefix="edge-bench-"))
    out = Path(args.out) if args.out else tmp / "run"
    try:
        cold = run_cli("run", args.recipe, "--out", str(out))
        warm = run_cli("run", args.recipe, "--out", str(out))
        metrics = json.loads((out / "metrics.json").read_text())
        stages = {s["name"]: s for s in metrics["stages"]}
        artifacts = {a["precision"]: a for s in metrics["stages"] for a in s.get("artifacts", [])}
        baseline = export_baseline(out, tmp)
        host = get_device("host")
        files = {"baseline_float32": baseline, "float32": out / artifacts["float32"]["path"], "int8": out / artifacts["int8"]["path"]}
        profiles = {name: profile_model(path, host) for name, path in files.items()}
        median = {name: p["latency_ms"]["median"] for name, p in profiles.items()}
        size = {name: path.stat().st_size for name, path in files.items()}
        base_acc = stages["train"]["model"]["accuracy"]
        result = {
            "recipe": metrics["recipe"],
            "accuracy": {name: s["model"]["accuracy"] for name, s in stages.items() if "model" in s}
            | {f"tflite_{p}": a["accuracy"] for p, a in artifacts.items()},
            "int8_accuracy_change_points": round((artifacts["int8"]["accuracy"] - base_acc) * 100, 2),
            "size_bytes": size,
            "size_ratio_baseline_fp32_over_int8": round(size["baseline_float32"] / size["int8"], 2),
            "latency_median_ms": median,
            "latency_ratio_baseline_fp32_over_int8": round(median["baseline_float32"] / median["int8"], 2),
            "latency_ratio_fp32_over_int8_same_model": round(median["float32"] / median["int8"], 2),
            "profiles_valid": {name: p["valid"] for name, p in profiles.items()},
            "invalid_because": {name: p["invalid_reasons"] for name, p in profiles.items() if not p["valid"]},
            "peak_rss_mb": {name: p["peak_rss_mb"] for name, p in profiles.items()},
            "transposes": {name: inspect_tflite(path)["transposes"] for name, path in files.items()},
            "params": {name: s["model"]["params"] for name, s in stages.items() if "model" in s},
            "macs": {name: s["model"]["macs"] for name, s in stages.items() if "model" in s},
            "wall_seconds": {"cold_run": round(cold, 1), "cached_rerun": round(warm, 1)},
            "stage_seconds": {name: s["seconds"] for name, s in stages.items()},
            "cached_statuses": sorted({s["status"] for s in metrics["stages"]}),
        }
        print(json.dumps(result, indent=2))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
