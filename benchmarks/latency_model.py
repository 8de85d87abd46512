"""How well the per-device latency model predicts real models, what the table costs, and whether latency
targets are met (issue 12).

Held-out models: zoo and torchvision architectures at 64-160 px, plain, restructured (depthwise) and pruned,
each exported by a real recipe run (`train: {epochs: 0}` on BatchNorm-calibrated random weights, as
trained weights would give: random-init float models can hit denormals; then quantize + export), float32 and
int8. For each device, starting from an empty table (the default; `--keep-table` uses the user's), the
table first learns the in-model cost of weights from six *calibration* models (other architectures and
sizes: predicted, measured, kept in the table), then every held-out file is predicted (`predict_file`,
which times the missing ops) and measured (`profile_model`), without learning from it: the share within
+-10 % / +-20 % and the RMS percentage error, also for the raw sums of single-op times.

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


# Models whose measurements teach the table the in-model cost of weights (`predict.weight_cost`);
# none of them is among the held-out models above.
CALIBRATION: dict[str, tuple[str, int, list[str]]] = {
    "cal-vgg_small-96": ("vgg_small", 96, []),
    "cal-resnet8-64": ("resnet8", 64, []),
    "cal-mobilenet_v2-64": ("torchvision:mobilenet_v2", 64, []),
    "cal-resnet18-96": ("torchvision:resnet18", 96, []),
    "cal-mobilenet_v3_small-96": ("torchvision:mobilenet_v3_small", 96, []),
    "cal-resnet34-64": ("torchvision:resnet34", 64, []),
}
ALL = {**MODELS, **CALIBRATION}


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
        arch, size, extra = ALL[name]
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
        return {"files": 0}
    return {"files": len(errors), "within_10pct": sum(abs(e) <= 0.10 for e in errors) / len(errors),
            "within_20pct": sum(abs(e) <= 0.20 for e in errors) / len(errors),
            "rms_pct": 100 * math.sqrt(sum(e * e for e in errors) / len(errors)),
            "mean_signed_pct": 100 * sum(errors) / len(errors)}


def fresh_cache(work: Path, device_name: str) -> Path:
    """An empty user cache for this device's table (the emulator's sysroot linked in: not part of it)."""
    cache = work / f"cache-{device_name}-{int(time.time())}"
    cache.mkdir(parents=True)
    emulator = Path.home() / ".cache" / "edge-pipeline" / "qemu-aarch64"
    if emulator.exists():
        (cache / "qemu-aarch64").symlink_to(emulator)
    return cache


def measure_files(device, files: dict[str, dict[str, Path]], learn: bool) -> list[dict[str, Any]]:
    from edge_pipeline.profiling.predict import learn_from, predict_file
    from edge_pipeline.profiling.runner import profile_model

    rows = []
    for name, by_precision in files.items():
        for precision, path in by_precision.items():
            t0 = time.time()
            prediction = predict_file(path, device)  # times the ops the table lacks: the table's build cost
            predict_seconds = time.time() - t0
            profile = profile_model(path, device)
            measured = profile["latency_ms"]["median"]
            if learn:
                learn_from(device, profile, prediction)
            # The noise floor: the same file measured again, later (the machine's own repeatability).
            again = None if learn else profile_model(path, device)["latency_ms"]["median"]
            rows.append({"model": name, "precision": precision, "predicted_ms": round(prediction.ms, 4),
                         "raw_ms": round(prediction.raw_ms, 4), "weight_mb": round(prediction.weight_mb, 3),
                         "measured_ms": measured, "valid": profile["valid"],
                         "error": prediction.ms / measured - 1 if measured else None,
                         "raw_error": prediction.raw_ms / measured - 1 if measured else None,
                         "unpriced": len(prediction.unpriced), "predict_seconds": round(predict_seconds, 2),
                         "remeasured_ms": again, "repeat_error": again / measured - 1 if again and measured else None})
            log(f"  {device.name} {name} {precision}: predicted {prediction.ms:.3f} ms (raw {prediction.raw_ms:.3f}), "
                f"measured {measured:.3f} ms ({rows[-1]['error']:+.1%})")
    return rows


def predictor_accuracy(device_name: str, files: dict[str, dict[str, Path]], calibration: dict[str, dict[str, Path]],
                       work: Path, keep_table: bool) -> dict[str, Any]:
    from edge_pipeline.profiling.devices import get_device
    from edge_pipeline.profiling.latency_table import load_table, table_path
    from edge_pipeline.profiling.predict import weight_cost

    device = get_device(device_name)
    if not keep_table:
        os.environ["EDGE_PIPELINE_CACHE"] = str(fresh_cache(work, device_name))
    t0 = time.time()
    log(f"{device_name}: calibration models (the table learns the in-model cost of weights from them)")
    calibration_rows = measure_files(device, calibration, learn=True)
    log(f"{device_name}: held-out models")
    rows = measure_files(device, files, learn=False)
    table = load_table(device)
    path = table_path(device)
    raw = [{**r, "error": r["raw_error"]} for r in rows]
    return {"device": device_name, "cache": os.environ.get("EDGE_PIPELINE_CACHE"), "rows": rows,
            "held_out": accuracy(rows), "held_out_float32": accuracy([r for r in rows if r["precision"] == "float32"]),
            "held_out_int8": accuracy([r for r in rows if r["precision"] == "int8"]),
            "held_out_raw_sum": accuracy(raw),
            "noise_floor_same_file_measured_twice": accuracy([{**r, "error": r["repeat_error"]} for r in rows]),
            "weight_cost_ms_per_mb": {w: weight_cost(table, w)[0] for w in ("float", "int8")} if table else None,
            "table": {"seconds_to_build": round(sum(r["predict_seconds"] for r in calibration_rows + rows), 1),
                      "seconds_total_incl_profiling": round(time.time() - t0, 1), "bytes": path.stat().st_size if path.exists() else 0,
                      "entries": len(table.entries) if table else 0, "models": len(table.models) if table else 0}}


# -- latency targets -------------------------------------------------------------------------------------

TARGET_MODELS = [("torchvision:mobilenet_v2", 128), ("torchvision:resnet18", 128)]


def target_recipe(arch: str, size: int, weights: Path, precision: str, source: str = "predicted") -> str:
    return (f"name: lt-{arch.split(':')[-1].replace('_', '-')}-{size}-{precision}-{source}\nseed: 0\n"
            f"data: {{dataset: digits, image_size: {size}, channels: 3, batch_size: 64}}\n"
            f"model: {{arch: \"{arch}\", weights: \"{weights}\"}}\nstages:\n"
            f"  - train: {{epochs: 0}}\n"
            f"  - prune: {{target_latency: 0.5, precision: {precision}, round_to: auto, allocation: global, "
            f"latency_from: {source}}}\n"
            f"  - quantize: {{}}\n  - export: {{}}\n"
            f"  - profile: {{devices: [host], precisions: [{precision}], outputs_check: 0}}\n")


def interleaved_ratio(pruned: Path, base: Path, repeats: int = 3) -> float:
    """pruned / base median latency, each measured `repeats` times alternately (A, B, A, B ...): a
    drift or burst of load hits both, unlike the profile stage's two measurements minutes apart."""
    import statistics

    from edge_pipeline.profiling.devices import get_device
    from edge_pipeline.profiling.runner import profile_model

    host = get_device("host")
    a, b = [], []
    for _ in range(repeats):
        a.append(profile_model(pruned, host)["latency_ms"]["median"])
        b.append(profile_model(base, host)["latency_ms"]["median"])
    return statistics.median(a) / statistics.median(b)


def latency_targets(work: Path, cache: str, source: str = "predicted") -> list[dict[str, Any]]:
    """prune target_latency 0.5 on the host; the pruned file's measured median vs the baseline's (the
    incoming model converted in the same precision, profiled by the same stage)."""
    out = []
    for arch, size in TARGET_MODELS:
        weights = work / f"{arch.replace(':', '_')}-{size}.safetensors"
        if not weights.is_file():
            make_weights(arch, size, weights)
        for precision in ("float32", "int8"):
            name = f"{arch.split(':')[-1]}-{size}-{precision}-{source}"
            recipe = work / f"target-{name}.yaml"
            recipe.write_text(target_recipe(arch, size, weights, precision, source))
            run = work / "targets" / name
            log(f"latency target: {name}")
            t0 = time.time()
            done = subprocess.run([*CLI, "run", str(recipe), "--out", str(run)], cwd=work, capture_output=True, text=True,
                                  env={**os.environ, "EDGE_PIPELINE_CACHE": cache})
            if done.returncode != 0:
                out.append({"model": name, "error": (done.stderr.strip().splitlines() or ["?"])[-1]})
                log(f"  failed: {out[-1]['error']}")
                continue
            details = json.loads(next(run.glob("*-prune/details.json")).read_text())["latency"]
            pruned = json.loads((run / "profiles" / f"host__model_{precision}.json").read_text())
            base = json.loads((run / "profiles" / f"host__baseline_{precision}.json").read_text())
            ratio = pruned["latency_ms"]["median"] / base["latency_ms"]["median"]
            again = interleaved_ratio(next(run.glob("*-export")) / f"model_{precision}.tflite",
                                      run / "baseline" / f"baseline_{precision}.tflite")
            out.append({"model": name, "target": 0.5, "round_to": details["round_to"],
                        "predicted_ratio": details["predicted_ratio"], "measured_ratio": round(ratio, 4),
                        "measured_ratio_interleaved": round(again, 4),
                        "met_within_10pct": abs(ratio / 0.5 - 1) <= 0.10,
                        "met_within_10pct_interleaved": abs(again / 0.5 - 1) <= 0.10,
                        "incoming_ms": {"predicted": details["incoming_ms"], "measured": base["latency_ms"]["median"]},
                        "pruned_ms": {"predicted": details["predicted_ms"], "measured": pruned["latency_ms"]["median"]},
                        "seconds": round(time.time() - t0, 1)})
            log(f"  measured {ratio:.3f} of the incoming model (predicted {details['predicted_ratio']:.3f})")
    return out


# -- latency-targeted vs MAC-targeted pruning at equal latency ---------------------------------------------

def compare_recipe(seed: int, prune: str) -> str:
    return (f"name: cmp-seed{seed}\nseed: {seed}\ndata: {{dataset: digits, image_size: 32, batch_size: 64}}\n"
            f"model: {{arch: vgg_small, num_classes: 10}}\nstages:\n  - train: {{epochs: 10, lr: 0.05}}\n"
            f"  - prune: {prune}\n"
            f"  - finetune: {{epochs: 5, distill: {{teacher: train, temperature: 4.0, alpha: 0.7}}}}\n"
            f"  - export: {{}}\n  - profile: {{devices: [host], outputs_check: 0}}\n")


def macs_fraction_for(train_dir: Path, predicted_ms: float, round_to: int) -> float:
    """The target_macs (global l1, same round_to) whose pruned model the latency model prices at
    `predicted_ms`: bisection on the trained model, priced like the prune stage prices it."""
    import copy

    import torch

    from edge_pipeline.compress.pruning import Target, prune_channels
    from edge_pipeline.models.store import load_model
    from edge_pipeline.profiling.devices import get_device
    from edge_pipeline.profiling.layer_latency import torch_units
    from edge_pipeline.profiling.predict import predict_signatures
    from edge_pipeline.profiling.torch_ops import torch_ops

    trained = load_model(train_dir).module.eval()
    host = get_device("host")

    def priced(fraction: float) -> float:
        model = copy.deepcopy(trained)
        prune_channels(model, torch.zeros(1, 1, 32, 32), Target("macs", fraction), "l1", "global", round_to)
        return predict_signatures([u for _, u in torch_units(torch_ops(model, (1, 1, 32, 32), "float32"))], host).ms

    low, high = 0.05, 0.95
    for _ in range(10):
        mid = (low + high) / 2
        if priced(mid) > predicted_ms:
            high = mid
        else:
            low = mid
    return round(low, 4)


def run_recipe(work: Path, name: str, text: str, cache: str, store: Path) -> Path:
    recipe = work / f"{name}.yaml"
    recipe.write_text(text)
    run = work / "compare" / name
    done = subprocess.run([*CLI, "run", str(recipe), "--out", str(run), "--store", str(store)], cwd=work,
                          capture_output=True, text=True, env={**os.environ, "EDGE_PIPELINE_CACHE": cache})
    if done.returncode != 0:
        raise SystemExit(f"{name}: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
    return run


def outcome(run: Path) -> dict[str, Any]:
    metrics = json.loads((run / "metrics.json").read_text())
    finetune = next(s for s in metrics["stages"] if s["type"] == "finetune")
    prune = json.loads(next(run.glob("*-prune/details.json")).read_text())
    pruned = json.loads((run / "profiles" / "host__model_float32.json").read_text())["latency_ms"]["median"]
    base = json.loads((run / "profiles" / "host__baseline_float32.json").read_text())["latency_ms"]["median"]
    macs_removed = prune["macs"][0] - prune["macs"][1]
    return {"accuracy": finetune["model"]["accuracy"], "measured_ms": pruned, "baseline_ms": base,
            "latency_ratio": round(pruned / base, 4), "macs": prune["macs"],
            "us_saved_per_mmac_removed": round(1000 * (base - pruned) / (macs_removed / 1e6), 3) if macs_removed else None}


def compare_targeting(work: Path, cache: str, seeds: list[int]) -> dict[str, Any]:
    rows = []
    for seed in seeds:
        store = work / "compare" / f"store-{seed}"
        log(f"compare seed {seed}: latency target")
        latency_run = run_recipe(work, f"cmp-latency-{seed}", compare_recipe(
            seed, "{target_latency: 0.5, precision: float32, round_to: auto, allocation: global}"), cache, store)
        details = json.loads(next(latency_run.glob("*-prune/details.json")).read_text())["latency"]
        os.environ["EDGE_PIPELINE_CACHE"] = cache
        fraction = macs_fraction_for(next(latency_run.glob("*-train")), details["predicted_ms"], details["round_to"])
        log(f"compare seed {seed}: MAC target {fraction} (same predicted latency)")
        macs_run = run_recipe(work, f"cmp-macs-{seed}", compare_recipe(
            seed, f"{{target_macs: {fraction}, round_to: {details['round_to']}, allocation: global}}"), cache, store)
        rows.append({"seed": seed, "target_macs": fraction, "latency_targeted": outcome(latency_run),
                     "mac_targeted": outcome(macs_run)})
        log(f"  {json.dumps(rows[-1])}")

    def mean(kind: str, key: str) -> float:
        values = [r[kind][key] for r in rows if r[kind][key] is not None]
        return round(sum(values) / len(values), 4) if values else float("nan")

    return {"rows": rows, "mean": {kind: {key: mean(kind, key) for key in ("accuracy", "latency_ratio", "us_saved_per_mmac_removed")}
                                   for kind in ("latency_targeted", "mac_targeted")}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default="/tmp/edge-pipeline-latency-model", help="models and tables (reused)")
    parser.add_argument("--devices", default="host,qemu-aarch64")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--calibration-models", default=",".join(CALIBRATION))
    parser.add_argument("--keep-table", action="store_true", help="use the user's tables instead of fresh ones")
    parser.add_argument("--skip-accuracy", action="store_true", help="only --targets / --compare-seeds (on --cache)")
    parser.add_argument("--cache", help="the cache (latency tables) for --skip-accuracy")
    parser.add_argument("--export-only", action="store_true")
    parser.add_argument("--targets", action="store_true", help="also run the latency-target recipes (host)")
    parser.add_argument("--targets-from", default="predicted", choices=["predicted", "measured"],
                        help="the prune stage's latency_from for --targets")
    parser.add_argument("--compare-seeds", default="", help="e.g. 0,1,2: latency- vs MAC-targeted pruning (host)")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    names = [n for n in args.models.split(",") if n]
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        raise SystemExit(f"unknown models {unknown}; known: {', '.join(MODELS)}")
    files = export_models(work, names)
    calibration = export_models(work, [n for n in args.calibration_models.split(",") if n in CALIBRATION])
    result: dict[str, Any] = {"held_out_models": len(files), "held_out_files": sum(len(v) for v in files.values()),
                              "calibration_models": len(calibration)}
    if not args.export_only:
        result["devices"] = [] if args.skip_accuracy else [
            predictor_accuracy(d, files, calibration, work, args.keep_table) for d in args.devices.split(",") if d]
        if args.skip_accuracy and args.cache:
            result["devices"] = [{"device": "host", "cache": args.cache}]
        if args.targets:
            host = next((d for d in result["devices"] if d["device"] == "host"), None)
            result["targets"] = latency_targets(work, host["cache"] if host else str(fresh_cache(work, "host")),
                                                args.targets_from)
        if args.compare_seeds:
            host = next((d for d in result["devices"] if d["device"] == "host"), None)
            result["compare"] = compare_targeting(work, host["cache"] if host else str(fresh_cache(work, "host")),
                                                  [int(x) for x in args.compare_seeds.split(",")])
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
