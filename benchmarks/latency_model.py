"""How well the per-device latency model predicts real models, what the table costs, and whether latency
targets are met (issue 12).

Held-out models: zoo and torchvision architectures at 64-160 px, plain, restructured (depthwise) and pruned,
each exported by a real recipe run (`train: {epochs: 0}` on BatchNorm-calibrated random weights, as
trained weights would give: random-init float models can hit denormals; then quantize + export), float32 and
int8. The predictor fits nothing on them: a prediction is the device's table lookups (single ops timed
alone) summed. For each device, starting from an empty table (`--fresh-table`, the default, so the table's
build time and size are measured too): predict every file (`predict_file`, which times the missing ops),
then measure it (`profile_model`); report the share within +-10 % / +-20 % and the RMS percentage error.

`--targets` also runs the latency-target recipes (prune `target_latency: 0.5` on mobilenet_v2 and resnet18 at
128 px, float32 and int8) and measures the result against the unpruned model on the host.

    .venv/bin/python benchmarks/latency_model.py [--work DIR] [--devices host,qemu-aarch64] [--models a,b]
        [--keep-table] [--targets]
Prints progress on stderr and one JSON document on stdout.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "edge_pipeline.cli"]

# id -> (arch, image size, extra stages before quantize)
MODELS: dict[str, tuple[str, int, list[str]]] = {
    "vgg_small-64": ("vgg_small", 64, []),
    "vgg_small-64-dw": ("vgg_small", 64, ["restructure: {depthwise_separable: {min_channels: 16}}"]),
    "vgg_small-64-pruned": ("vgg_small", 64, ["prune: {ratio: 0.5}"]),
    "resnet20-64": ("resnet20", 64, []),
    "resnet8-96": ("resnet8", 96, []),
    "convnet_5x5-64": ("convnet_5x5", 64, []),
    "mobilenet_v2-96": ("torchvision:mobilenet_v2", 96, []),
    "mobilenet_v2-128-pruned": ("torchvision:mobilenet_v2", 128, ["prune: {ratio: 0.5}"]),
    "mobilenet_v2-160": ("torchvision:mobilenet_v2", 160, []),
    "resnet18-64": ("torchvision:resnet18", 64, []),
    "resnet18-96-dw": ("torchvision:resnet18", 96, ["restructure: {depthwise_separable: {}}"]),
    "resnet18-128-pruned": ("torchvision:resnet18", 128, ["prune: {ratio: 0.3}"]),
    "mobilenet_v3_small-128": ("torchvision:mobilenet_v3_small", 128, []),
    "shufflenet_v2_x0_5-128": ("torchvision:shufflenet_v2_x0_5", 128, []),
    "squeezenet1_1-128": ("torchvision:squeezenet1_1", 128, []),
    "regnet_x_400mf-96": ("torchvision:regnet_x_400mf", 96, []),
}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def make_weights(arch: str, size: int, path: Path) -> None:
    """Random init with BatchNorm statistics averaged over random inputs (not a momentum of the init)."""
    import torch
    from safetensors.torch import save_file

    from edge_pipeline.models.base import BaseSpec, build_model

    torch.manual_seed(0)
    net = build_model(BaseSpec(arch, 10, 3, size))
    norms = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
    net.train()
    with torch.no_grad():
        for _ in range(4):
            net(torch.randn(8, 3, size, size))
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))


def recipe_text(name: str, arch: str, size: int, weights: Path, extra: list[str]) -> str:
    stages = "".join(f"  - {s}\n" for s in ["train: {epochs: 0}", *extra, "quantize: {}", "export: {}"])
    return (f"name: lm-{name}\nseed: 0\ndata: {{dataset: digits, image_size: {size}, channels: 3, batch_size: 64}}\n"
            f"model: {{arch: \"{arch}\", weights: \"{weights}\"}}\nstages:\n{stages}")


def export_models(work: Path, names: list[str]) -> dict[str, dict[str, Path]]:
    """model id -> precision -> .tflite, each exported once into `work/runs/<id>` (reused when present)."""
    files: dict[str, dict[str, Path]] = {}
    for name in names:
        arch, size, extra = MODELS[name]
        out = work / "runs" / name
        export = next(iter(sorted(out.glob("*-export"))), None) if out.exists() else None
        if export is None or not (export / "model_int8.tflite").is_file():
            weights = work / f"{arch.replace(':', '_')}-{size}.safetensors"
            if not weights.is_file():
                make_weights(arch, size, weights)
            recipe = work / f"{name}.yaml"
            recipe.write_text(recipe_text(name, arch, size, weights, extra))
            log(f"exporting {name}")
            t0 = time.time()
            done = subprocess.run([*CLI, "run", str(recipe), "--out", str(out)], cwd=work, capture_output=True, text=True)
            if done.returncode != 0:
                log(f"  {name}: export failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
                continue
            log(f"  {name}: {time.time() - t0:.0f} s")
            export = next(iter(sorted(out.glob("*-export"))))
        files[name] = {p: export / f"model_{p}.tflite" for p in ("float32", "int8") if (export / f"model_{p}.tflite").is_file()}
    return files


def accuracy(rows: list[dict[str, Any]]) -> dict[str, Any]:
    errors = [r["error"] for r in rows if r.get("error") is not None]
    if not errors:
        return {"models": 0}
    return {"files": len(errors), "within_10pct": sum(abs(e) <= 0.10 for e in errors) / len(errors),
            "within_20pct": sum(abs(e) <= 0.20 for e in errors) / len(errors),
            "rms_pct": 100 * math.sqrt(sum(e * e for e in errors) / len(errors)),
            "mean_signed_pct": 100 * sum(errors) / len(errors)}


def predictor_accuracy(device_name: str, files: dict[str, dict[str, Path]], work: Path, keep_table: bool) -> dict[str, Any]:
    from edge_pipeline.profiling.devices import get_device
    from edge_pipeline.profiling.latency_table import table_path
    from edge_pipeline.profiling.predict import predict_file
    from edge_pipeline.profiling.runner import profile_model

    device = get_device(device_name)
    if not keep_table:
        os.environ["EDGE_PIPELINE_CACHE"] = str(work / f"cache-{device_name}-{int(time.time())}")
        emulator = Path.home() / ".cache" / "edge-pipeline" / "qemu-aarch64"
        if emulator.exists():  # the sysroot is not part of the table: reuse it
            (Path(os.environ["EDGE_PIPELINE_CACHE"])).mkdir(parents=True, exist_ok=True)
            link = Path(os.environ["EDGE_PIPELINE_CACHE"]) / "qemu-aarch64"
            if not link.exists():
                link.symlink_to(emulator)
    rows, build_seconds = [], 0.0
    for name, by_precision in files.items():
        for precision, path in by_precision.items():
            t0 = time.time()
            prediction = predict_file(path, device)
            build_seconds += time.time() - t0
            profile = profile_model(path, device)
            measured = profile["latency_ms"]["median"]
            error = prediction.ms / measured - 1 if measured else None
            rows.append({"model": name, "precision": precision, "predicted_ms": round(prediction.ms, 4),
                         "measured_ms": measured, "valid": profile["valid"], "error": error,
                         "unpriced": len(prediction.unpriced)})
            log(f"  {device_name} {name} {precision}: predicted {prediction.ms:.3f} ms, measured {measured:.3f} ms "
                f"({error:+.1%})" if error is not None else f"  {device_name} {name} {precision}: no measurement")
    table = table_path(device)
    return {"device": device_name, "rows": rows, "all": accuracy(rows),
            "float32": accuracy([r for r in rows if r["precision"] == "float32"]),
            "int8": accuracy([r for r in rows if r["precision"] == "int8"]),
            "table": {"seconds_to_build": round(build_seconds, 1), "bytes": table.stat().st_size if table.exists() else 0,
                      "entries": len(json.loads(table.read_text())["entries"]) if table.exists() else 0}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default="/tmp/edge-pipeline-latency-model", help="models and tables (reused)")
    parser.add_argument("--devices", default="host,qemu-aarch64")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--keep-table", action="store_true", help="use the user's tables instead of fresh ones")
    parser.add_argument("--export-only", action="store_true")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    names = [n for n in args.models.split(",") if n]
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        raise SystemExit(f"unknown models {unknown}; known: {', '.join(MODELS)}")
    files = export_models(work, names)
    result: dict[str, Any] = {"models": len(files), "files": sum(len(v) for v in files.values())}
    if not args.export_only:
        result["devices"] = [predictor_accuracy(d, files, work, args.keep_table) for d in args.devices.split(",") if d]
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
