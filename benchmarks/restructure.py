"""Restructure transforms on the quickstart baseline: accuracy right after and after a short fine-tune,
initialized from the trained weights (svd / fit) vs randomly; params and MACs; and what parameter
sharing does to the TFLite file and its latency.

    PYTHONPATH=$PWD python benchmarks/restructure.py [--out FILE] [--quick] [--no-tflite]

Baselines (trained here, seed 0, as recipes/quickstart.yaml trains): vgg_small on digits 32x32
(the quickstart model); convnet_5x5 for `decompose` (vgg_small has no 5x5 conv) and resnet20 for
`share` (vgg_small has no repeated blocks). Every case starts from the same trained baseline and is
fine-tuned with plain cross-entropy for `--finetune-epochs` (lr 0.01, cosine). "no_bn_refresh" is
the accuracy right after the transform with the stage's BatchNorm statistics refresh turned off.
Prints one JSON document (also written to --out). Accuracies are on the held-out test split.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from edge_pipeline.data import build_data, calibration_batch
from edge_pipeline.evaluation import accuracy
from edge_pipeline.models import BaseSpec, build_model
from edge_pipeline.models.store import TrackedModel
from edge_pipeline.recipe import DataConfig
from edge_pipeline.stages.finetune import FinetuneConfig
from edge_pipeline.stages.restructure import TRANSFORMS
from edge_pipeline.stages.runners.restructure import apply_transform
from edge_pipeline.stages.train import TrainConfig
from edge_pipeline.training import cross_entropy, fit
from edge_pipeline.ui import console

SEED = 0

# (case name, baseline arch, [(transform, config), ...]); `init` is varied where a case lists it.
CASES = [
    ("depthwise_separable/linear", "vgg_small", [("depthwise_separable", {"activation": "none"})]),
    ("depthwise_separable/relu", "vgg_small", [("depthwise_separable", {"activation": "relu"})]),
    ("inverted_residual/x2", "vgg_small", [("depthwise_separable", {"inverted_residual": True, "expansion": 2})]),
    ("inverted_residual/x4", "vgg_small", [("depthwise_separable", {"inverted_residual": True, "expansion": 4})]),
    ("inverted_residual/x6", "vgg_small", [("depthwise_separable", {"inverted_residual": True, "expansion": 6})]),
    # vgg_small has no 1x1 conv: group the pointwise convs depthwise_separable made
    ("grouped_pointwise/g4", "vgg_small", [("depthwise_separable", {}), ("grouped_pointwise", {"groups": 4})]),
    ("factorize/rank=out", "vgg_small", [("factorize", {})]),
    ("factorize/relu", "vgg_small", [("factorize", {"activation": "relu"})]),
    ("low_rank/energy0.8", "vgg_small", [("low_rank", {})]),
    ("low_rank/energy0.5", "vgg_small", [("low_rank", {"energy": 0.5})]),
    ("gap_head", "vgg_small", [("gap_head", {})]),
    ("decompose", "convnet_5x5", [("decompose", {})]),
    ("share", "resnet20", [("share", {})]),
]
# The init options compared per transform (the first is the default).
INITS = {name: list(TRANSFORMS.get(name).Config.model_fields["init"].annotation.__args__) for name in TRANSFORMS.names()}


def log(message: str) -> None:
    console.print(f"[cyan]bench[/] {message}")


def train_baseline(arch: str, data, epochs: int) -> TrackedModel:
    base = BaseSpec(arch, data.num_classes, data.in_channels, data.image_size)
    torch.manual_seed(SEED)
    module = build_model(base)
    fit(module, data, TrainConfig(epochs=epochs, lr=0.05), SEED, cross_entropy(), f"train {arch}")
    return TrackedModel(module.eval(), base)


def run_case(baseline: TrackedModel, steps, init: str, data, inputs, finetune_epochs: int) -> dict:
    """The last step's transform gets `init`; earlier steps (set-up) keep their defaults."""
    shape = data.input_shape
    test = data.loader("test", batch_size=256)
    results = {}
    for refresh in (False, True):
        module = copy.deepcopy(baseline.module)
        facts = []
        for i, (name, config) in enumerate(steps):
            cfg = TRANSFORMS.get(name).Config.model_validate({**config, "init": init} if i == len(steps) - 1 else config)
            _, f = apply_transform(module, name, cfg, inputs, shape, SEED, refresh)
            facts.append(f)
        results[refresh] = (module, facts, accuracy(module, test))
    module, facts, right_after = results[True]
    started = time.perf_counter()
    fit(module, data, FinetuneConfig(epochs=finetune_epochs), SEED, cross_entropy(), "finetune")
    rec = facts[-1].get("reconstruction") or {}
    return {
        "params": [facts[0]["params_before"], facts[-1]["params_after"]],
        "macs": [facts[0]["macs_before"], facts[-1]["macs_after"]],
        "layers_replaced": facts[-1]["replaced"],
        "layer_error_mean": rec.get("mean"),
        "top1_agreement_calibration": rec.get("top1_agreement"),
        "accuracy": {
            "no_bn_refresh": round(results[False][2], 4),
            "after_restructure": round(right_after, 4),
            "after_finetune": round(accuracy(module, test), 4),
        },
        "finetune_seconds": round(time.perf_counter() - started, 1),
    }


def tflite_files(model: TrackedModel, data, work: Path) -> dict:
    """float32 and int8 TFLite files of `model` (the export stage's path: fold, ONNX, onnx2tf)."""
    from edge_pipeline.convert.nhwc import fold_flatten_linear
    from edge_pipeline.convert.onnx_export import export_onnx
    from edge_pipeline.convert.tflite_convert import convert_to_tflite

    shape = data.input_shape
    work.mkdir(parents=True, exist_ok=True)
    exported, _ = fold_flatten_linear(model.module.eval(), shape)
    export_onnx(exported, shape, work / "model.onnx")
    calib = calibration_batch(data, 128, SEED).permute(0, 2, 3, 1).numpy()
    mean, std = np.asarray(data.mean, np.float32), np.asarray(data.std, np.float32)
    files = convert_to_tflite(work / "model.onnx", work, ["float32", "int8"], calib * std + mean, calib)
    return {"onnx": work / "model.onnx", **files}


def interleaved_latency(paths: dict[str, Path], sample: np.ndarray, runs: int, rounds: int = 5) -> dict[str, float]:
    """Median ms per invoke (1 thread), models timed in alternation so machine load hits all alike."""
    from edge_pipeline.convert.runtime import load_interpreter, quantize_input

    interpreters = {}
    for label, path in paths.items():
        interpreter = load_interpreter(path)
        detail = interpreter.get_input_details()[0]
        interpreter.set_tensor(detail["index"], quantize_input(sample, detail))
        for _ in range(10):
            interpreter.invoke()
        interpreters[label] = interpreter
    times: dict[str, list[float]] = {label: [] for label in paths}
    for _ in range(rounds):
        for label, interpreter in interpreters.items():
            for _ in range(max(1, runs // rounds)):
                t = time.perf_counter()
                interpreter.invoke()
                times[label].append(time.perf_counter() - t)
    return {label: round(float(np.median(t)) * 1000, 4) for label, t in times.items()}


def share_storage(baseline: TrackedModel, data, inputs, runs: int, do_tflite: bool) -> dict:
    """What sharing does to bytes on disk (safetensors, ONNX, TFLite float32/int8) and to latency."""
    from edge_pipeline.convert.inspect import inspect_tflite
    from edge_pipeline.models.store import save_model

    shared = TrackedModel(copy.deepcopy(baseline.module), baseline.base)
    edit, _ = apply_transform(shared.module, "share", TRANSFORMS.get("share").Config(), inputs, data.input_shape, SEED)
    shared.edits.append(edit)
    out: dict = {}
    files: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, model in (("baseline", baseline), ("shared", shared)):
            folder = Path(tmp) / label
            save_model(model, folder)
            out[label] = {"safetensors_bytes": (folder / "model.safetensors").stat().st_size,
                          "params": sum(p.numel() for p in {id(p): p for p in model.module.parameters()}.values())}
            if do_tflite:
                log(f"share: converting {label} to TFLite")
                files[label] = tflite_files(model, data, folder / "tflite")
                out[label]["onnx_bytes"] = files[label]["onnx"].stat().st_size
                for precision in ("float32", "int8"):
                    info = inspect_tflite(files[label][precision])
                    out[label][precision] = {"size_bytes": info["size_bytes"], "ops": info["ops"],
                                             "distinct_weight_buffers_bytes": _distinct_buffer_bytes(files[label][precision])}
        if do_tflite:
            sample = calibration_batch(data, 1, SEED).permute(0, 2, 3, 1).numpy()
            for precision in ("float32", "int8"):
                ms = interleaved_latency({label: files[label][precision] for label in files}, sample, runs)
                for label in files:
                    out[label][precision]["median_ms"] = ms[label]
    b, s = out["baseline"], out["shared"]
    ratios = {"params": round(s["params"] / b["params"], 4),
              "safetensors_bytes": round(s["safetensors_bytes"] / b["safetensors_bytes"], 4)}
    if do_tflite:
        ratios["onnx_bytes"] = round(s["onnx_bytes"] / b["onnx_bytes"], 4)
        for p in ("float32", "int8"):
            ratios[f"tflite_{p}_bytes"] = round(s[p]["size_bytes"] / b[p]["size_bytes"], 4)
            ratios[f"tflite_{p}_median_ms"] = round(s[p]["median_ms"] / b[p]["median_ms"], 4)
    out["ratios_shared_over_baseline"] = ratios
    return out


def _distinct_buffer_bytes(path: Path) -> int:
    """Bytes of the file's distinct non-empty buffers (a buffer used by several tensors counts once)."""
    from edge_pipeline.convert.flatbuffer import read_model

    model = read_model(path)
    used = {t.buffer for g in model.subgraphs for t in (g.tensors or [])}
    return int(sum(len(model.buffers[i].data) for i in used if model.buffers[i].data is not None))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="Also write the JSON here.")
    parser.add_argument("--train-epochs", type=int, default=15)
    parser.add_argument("--finetune-epochs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="2 training epochs, 1 fine-tune epoch (a smoke run).")
    parser.add_argument("--no-tflite", action="store_true", help="Skip the TFLite size/latency part of `share`.")
    parser.add_argument("--runs", type=int, default=200, help="Timed invokes per TFLite model.")
    args = parser.parse_args(argv)
    if args.quick:
        args.train_epochs, args.finetune_epochs, args.runs = 2, 1, 20
    torch.set_num_threads(max(1, torch.get_num_threads()))
    started = time.perf_counter()
    data = build_data(DataConfig(dataset="digits", image_size=32, batch_size=64), SEED)
    inputs = calibration_batch(data, 256, SEED)
    test = data.loader("test", batch_size=256)
    baselines, report = {}, {"benchmark": "restructure", "data": "digits 32x32", "seed": SEED,
                             "train_epochs": args.train_epochs, "finetune_epochs": args.finetune_epochs,
                             "baselines": {}, "cases": {}}
    for arch in dict.fromkeys(arch for _, arch, _ in CASES):
        log(f"training baseline {arch}")
        baselines[arch] = train_baseline(arch, data, args.train_epochs)
        report["baselines"][arch] = {"accuracy": round(accuracy(baselines[arch].module, test), 4)}
    for case, arch, steps in CASES:
        transform = steps[-1][0]
        entry = {"model": arch, "steps": [{name: cfg} for name, cfg in steps], "by_init": {}}
        for init in INITS[transform]:
            log(f"{case} init={init}")
            entry["by_init"][init] = run_case(baselines[arch], steps, init, data, inputs, args.finetune_epochs)
        inits = list(entry["by_init"])
        first, last = entry["by_init"][inits[0]]["accuracy"], entry["by_init"][inits[-1]]["accuracy"]
        entry[f"{inits[0]}_minus_{inits[-1]}"] = {
            "after_restructure": round(first["after_restructure"] - last["after_restructure"], 4),
            "after_finetune": round(first["after_finetune"] - last["after_finetune"], 4),
        }
        report["cases"][case] = entry
    log("share: storage and TFLite")
    report["share_storage"] = share_storage(baselines["resnet20"], data, inputs, args.runs, not args.no_tflite)
    report["seconds"] = round(time.perf_counter() - started, 1)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
