"""Conversion across architectures and precisions: does each convert, how faithfully, how fast.

For each torchvision classifier at 64x64 (random init, 10 classes) and each precision (float32,
float16, dynamic_int8, int8, int16x8): ok (converted, loads and runs), conversion seconds, size,
max relative error vs torch (max |tflite - torch| / max |torch| on 16 random inputs), TRANSPOSE
count, host latency (median ms from the project's own profiler on the `host` device) and whether
tflite-runtime 2.14 loads it (if its side venv exists). Prints a table on stderr and JSON on stdout.

Random init: BatchNorm statistics are first estimated on random inputs (`--raw-init` skips this),
so activation ranges look like a trained network's instead of shrinking through the depth.

    PYTHONPATH=$PWD python benchmarks/conversion.py [--arch mobilenet_v2 ...] [--no-latency]
Slow: onnx2tf takes ~20-70 s per architecture on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ARCHS = ["resnet18", "mobilenet_v2", "vgg11_bn", "shufflenet_v2_x0_5", "mobilenet_v3_small", "efficientnet_b0", "regnet_x_400mf"]
PRECISIONS = ["float32", "float16", "dynamic_int8", "int8", "int16x8"]
SIZE = 64


def build(arch: str, raw_init: bool):
    import torch

    from edge_pipeline.models.tv import build_torchvision

    torch.manual_seed(0)
    model = build_torchvision(arch, num_classes=10, in_channels=3)
    if not raw_init:
        model.train()
        with torch.no_grad():
            for _ in range(4):
                model(torch.randn(16, 3, SIZE, SIZE))
    return model.eval()


def measure_arch(arch: str, work: Path, raw_init: bool, latency: bool) -> list[dict]:
    import torch

    from edge_pipeline.convert.compat import check_model, runtime_python
    from edge_pipeline.convert.inspect import inspect_tflite
    from edge_pipeline.convert.nhwc import fold_flatten_linear
    from edge_pipeline.convert.onnx_export import compare_onnx_to_torch, export_onnx, relative_max_error
    from edge_pipeline.convert.runtime import load_interpreter, run_tflite
    from edge_pipeline.convert.tflite_convert import run_conversion
    from edge_pipeline.errors import EdgePipelineError
    from edge_pipeline.profiling.devices import get_device
    from edge_pipeline.profiling.runner import profile_model

    rng = np.random.default_rng(0)
    model = build(arch, raw_init)
    shape = (1, 3, SIZE, SIZE)
    folder = work / arch
    folder.mkdir(parents=True)
    onnx_path = folder / "model.onnx"
    exported, _ = fold_flatten_linear(model, shape)
    started = time.perf_counter()
    export_onnx(exported, shape, onnx_path, scopes=getattr(exported, "export_scopes", None))
    inputs = rng.standard_normal((16, SIZE, SIZE, 3)).astype(np.float32)
    compare_onnx_to_torch(model, onnx_path, inputs[:8].transpose(0, 3, 1, 2).copy(), 1e-4)
    onnx_seconds = time.perf_counter() - started
    calibration = rng.standard_normal((32, SIZE, SIZE, 3)).astype(np.float32)
    rows = []
    try:
        conversion = run_conversion(onnx_path, folder, PRECISIONS, np.clip(calibration * 0.25 + 0.5, 0, 1), calibration,
                                    log_path=folder / "convert.log")
    except EdgePipelineError as exc:
        return [{"arch": arch, "precision": p, "ok": False, "error": str(exc)[:300]} for p in PRECISIONS]
    with torch.no_grad():
        reference = model(torch.from_numpy(inputs).permute(0, 3, 1, 2)).numpy()
    host = get_device("host")
    old_runtime = runtime_python("tflite-runtime", "2.14")
    for precision in PRECISIONS:
        if precision in conversion.failed:
            rows.append({"arch": arch, "precision": precision, "ok": False, "error": conversion.failed[precision][:300]})
            continue
        path = conversion.files[precision]
        row = {"arch": arch, "precision": precision, "onnx_seconds": round(onnx_seconds, 2),
               "onnx2tf_seconds": conversion.seconds["onnx2tf"], "seconds": conversion.seconds[precision],
               "size_bytes": path.stat().st_size}
        info = inspect_tflite(path)
        row["transposes"] = info["transposes"]
        if precision in conversion.float_fallback:
            row["float_fallback"] = conversion.float_fallback[precision]
        try:
            logits = run_tflite(load_interpreter(path), [inputs])
        except EdgePipelineError as exc:
            rows.append({**row, "ok": False, "error": str(exc)[:300]})
            continue
        row["ok"] = True
        row["max_rel_error"] = float(f"{relative_max_error(logits, reference):.3e}")
        row["agreement"] = float((logits.argmax(1) == reference.argmax(1)).mean())
        if latency:
            profile = profile_model(path, host)
            row["host_latency_ms"] = profile["latency_ms"]["median"]
            row["latency_valid"] = profile["valid"]
        if old_runtime:
            row["tflite_runtime_2_14"] = check_model(path, "tflite-runtime", "2.14").line().split(": ", 1)[1][:160]
        rows.append(row)
    return rows


def summarize(rows: list[dict]) -> dict:
    by = {(r["arch"], r["precision"]): r for r in rows}
    archs = sorted({r["arch"] for r in rows}, key=ARCHS.index)
    out = {"converted": sum(1 for r in rows if r.get("ok")), "total": len(rows)}
    out["float32_within_1e-4"] = all(by[(a, "float32")].get("max_rel_error", 1) <= 1e-4 for a in archs)
    out["failed"] = [f"{r['arch']} {r['precision']}: {r.get('error', '')[:120]}" for r in rows if not r.get("ok")]
    ratios = {}
    for a in archs:
        f32, i8 = by.get((a, "float32"), {}), by.get((a, "int8"), {})
        if f32.get("ok") and i8.get("ok"):
            ratios[a] = {"int8_size_ratio": round(i8["size_bytes"] / f32["size_bytes"], 3)}
            if "host_latency_ms" in f32 and "host_latency_ms" in i8:
                ratios[a]["int8_latency_ratio"] = round(i8["host_latency_ms"] / f32["host_latency_ms"], 3)
    out["int8_vs_float32"] = ratios
    return out


def table(rows: list[dict]) -> str:
    head = f"{'arch':<20} {'precision':<13} {'ok':<3} {'sec':>6} {'size KB':>9} {'max err':>9} {'T':>2} {'host ms':>8}  tflite-runtime 2.14"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['arch']:<20} {r['precision']:<13} {'yes' if r.get('ok') else 'NO':<3} {r.get('seconds', 0):>6.1f} "
            f"{r.get('size_bytes', 0) / 1024:>9.1f} {r.get('max_rel_error', float('nan')):>9.2e} {r.get('transposes', -1):>2} "
            f"{r.get('host_latency_ms', float('nan')):>8.3f}  {r.get('tflite_runtime_2_14', r.get('error', ''))[:70]}"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", action="append", choices=ARCHS, help="default: all seven")
    parser.add_argument("--raw-init", action="store_true", help="skip BatchNorm statistics estimation")
    parser.add_argument("--no-latency", action="store_true", help="skip host profiling")
    args = parser.parse_args()
    rows: list[dict] = []
    started = time.perf_counter()
    from edge_pipeline.errors import EdgePipelineError

    with tempfile.TemporaryDirectory(prefix="edge-bench-convert-") as work:
        for arch in args.arch or ARCHS:
            print(f"== {arch}", file=sys.stderr)
            try:
                arch_rows = measure_arch(arch, Path(work), args.raw_init, not args.no_latency)
            except EdgePipelineError as exc:  # e.g. the ONNX export itself fails: a result, not a crash
                arch_rows = [{"arch": arch, "precision": p, "ok": False, "error": str(exc)[:300]} for p in PRECISIONS]
            for row in arch_rows:
                print("row " + json.dumps(row), file=sys.stderr, flush=True)
            rows += arch_rows
    print(table(rows), file=sys.stderr)
    print(json.dumps({"benchmark": "conversion", "image_size": SIZE, "raw_init": args.raw_init,
                      "wall_seconds": round(time.perf_counter() - started, 1), "summary": summarize(rows), "rows": rows},
                     indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
