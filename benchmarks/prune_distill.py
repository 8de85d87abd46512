#!/usr/bin/env python
"""Pruning and distillation, measured in one run, as JSON.

1. criteria (quickstart data and model: digits 32 px, vgg_small): a baseline trained like the
   quickstart (and a Network Slimming baseline trained with an L1 penalty on BatchNorm scales, for
   `bn_scale`), pruned to 50% of its MACs by l1, bn_scale, taylor and random, then fine-tuned for
   the same epochs with plain cross-entropy and with Hinton distillation from the baseline (and
   with distillation + feature hints), over several seeds; test accuracy of each.
2. architectures: torchvision shufflenet_v2_x0_5, resnet18, mobilenet_v2 and mobilenet_v2 after
   the `grouped_pointwise` restructure (random init, BatchNorm statistics estimated on random
   inputs) pruned to 50% of MACs, exported to float32 TFLite through the pipeline's converter,
   TFLite outputs compared with torch.
3. sparsity: the baseline magnitude-pruned (unstructured) at several sparsities and fine-tuned with
   the zeros kept; dense vs TFLite `EXPERIMENTAL_SPARSITY` conversions (float32 and int8) of the
   same SavedModel: file size and host latency.

Usage: python benchmarks/prune_distill.py [--parts criteria,archs,sparsity] [--seeds 3] [--epochs 8]
(`OMP_NUM_THREADS=1` is set unless given: on a few shared cores, more threads make small kernels slower.)
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TARGET_MACS = 0.5  # fraction of MACs kept; --target-macs changes it for the criteria part


def quickstart_data():
    from edge_pipeline.data import build_data
    from edge_pipeline.recipe import DataConfig

    return build_data(DataConfig(dataset="digits", image_size=32, batch_size=64), 0)


def test_accuracy(model, data) -> float:
    from edge_pipeline.evaluation import accuracy

    return round(accuracy(model, data.loader("test", batch_size=256)), 4)


def train_baseline(data, bn_l1: float, epochs: int):
    import torch

    from edge_pipeline.models import BaseSpec, build_model
    from edge_pipeline.stages.runners.train import bn_regularizer
    from edge_pipeline.stages.train import TrainConfig
    from edge_pipeline.training import cross_entropy, fit

    torch.manual_seed(0)
    model = build_model(BaseSpec("vgg_small", 10, data.in_channels, data.image_size))
    cfg = TrainConfig(epochs=epochs, lr=0.05, bn_l1=bn_l1)
    fit(model, data, cfg, 0, cross_entropy(), f"baseline (bn_l1={bn_l1:g})", regularizer=bn_regularizer(cfg))
    return model.eval()


def prune(model, data, criterion: str, allocation: str, seed: int, target: float = TARGET_MACS):
    import torch

    from edge_pipeline.compress.pruning import Target, prune_channels
    from edge_pipeline.data import calibration_batch, stratified_indices
    from edge_pipeline.models.counting import count_macs

    pruned = copy.deepcopy(model)
    calibration = None
    if criterion == "taylor":
        idx = stratified_indices(data.train_labels, 256, seed)
        calibration = (calibration_batch(data, 256, seed), torch.as_tensor(data.train_labels[idx]))
    before = count_macs(pruned, data.input_shape)
    prune_channels(pruned, torch.zeros(data.input_shape), Target("macs", target), criterion, allocation,
                   seed=seed, calibration=calibration)
    return pruned, count_macs(pruned, data.input_shape) / before


def finetune(model, data, teacher, mode: str, epochs: int, seed: int):
    from edge_pipeline.compress.distill import DistillLoss, FeatureSpec, pair_layers
    from edge_pipeline.stages.finetune import FinetuneConfig
    from edge_pipeline.training import cross_entropy, fit

    student = copy.deepcopy(model)
    teacher = copy.deepcopy(teacher)  # DistillLoss freezes its teacher; the baseline is pruned again later
    cfg = FinetuneConfig(epochs=epochs, lr=0.01)
    extra = []
    if mode == "plain":
        loss = cross_entropy()
    elif mode == "kd":
        loss = DistillLoss(teacher, temperature=4.0, alpha=0.7)
    else:  # kd + feature hints at stage boundaries (FitNets-style MSE through 1x1 adapters)
        example = data.sample("train", 2)
        pairs = pair_layers(student, teacher, example, "auto")
        loss = DistillLoss(teacher, 4.0, 0.7, 0.0, "logits+features", FeatureSpec(pairs, "mse", 1.0), student, example)
        extra = loss.parameters()
    fit(student, data, cfg, seed, loss, f"finetune {mode} seed {seed}", extra_params=extra)
    return test_accuracy(student, data)


def part_criteria(args) -> dict:
    data = quickstart_data()
    baselines = {"plain": train_baseline(data, 0.0, args.train_epochs),
                 "slimming": train_baseline(data, args.bn_l1, args.train_epochs)}
    out = {"data": "digits 32 px (quickstart)", "model": "vgg_small", "target_macs_kept": args.target_macs,
           "allocation": args.allocation, "finetune_epochs": args.epochs, "seeds": args.seeds,
           "baseline_accuracy": {k: test_accuracy(m, data) for k, m in baselines.items()},
           "slimming_bn_l1": args.bn_l1, "criteria": {}}
    mean = lambda v: round(sum(v) / len(v), 4)
    modes = ("plain", "kd", "kd+features")
    for criterion in args.criteria:
        teacher = baselines["slimming" if criterion == "bn_scale" else "plain"]
        row = {"baseline": "slimming" if criterion == "bn_scale" else "plain"}
        accs = {e: {m: [] for m in modes} for e in args.epochs}
        after_prune, macs_kept = [], []
        for seed in range(args.seeds):
            pruned, kept = prune(teacher, data, criterion, args.allocation, seed, args.target_macs)
            after_prune.append(test_accuracy(pruned, data))
            macs_kept.append(round(kept, 4))
            for epochs in args.epochs:
                for mode in modes:
                    accs[epochs][mode].append(finetune(pruned, data, teacher, mode, epochs, seed))
        row.update({"macs_kept": macs_kept, "accuracy_after_prune": after_prune, "by_epochs": {}})
        for epochs, by_mode in accs.items():
            row["by_epochs"][str(epochs)] = {
                "accuracy": {mode: {"mean": mean(v), "per_seed": v} for mode, v in by_mode.items()},
                "kd_minus_plain_points": round((mean(by_mode["kd"]) - mean(by_mode["plain"])) * 100, 2),
                "kd_features_minus_plain_points": round((mean(by_mode["kd+features"]) - mean(by_mode["plain"])) * 100, 2),
            }
        out["criteria"][criterion] = row
        print(f"[criteria] {criterion}: {json.dumps(row)}", file=sys.stderr)
    longest = str(max(args.epochs))
    out["ranking_by_plain_finetune"] = {
        str(e): sorted(out["criteria"], key=lambda c: -out["criteria"][c]["by_epochs"][str(e)]["accuracy"]["plain"]["mean"])
        for e in args.epochs}
    out["ranking_after_prune"] = sorted(out["criteria"], key=lambda c: -sum(out["criteria"][c]["accuracy_after_prune"]))
    out["kd_minus_plain_points"] = {str(e): {c: r["by_epochs"][str(e)]["kd_minus_plain_points"] for c, r in out["criteria"].items()}
                                    for e in args.epochs}
    out["kd_beats_plain_at_longest_budget"] = {c: r["by_epochs"][longest]["kd_minus_plain_points"] > 0
                                               for c, r in out["criteria"].items()}
    return out


# -- architectures -----------------------------------------------------------------------------


def export_float32(module, shape, work: Path, images01):
    """The export stage's own path: Flatten->Linear fold, checked ONNX export, onnx2tf."""
    from edge_pipeline.convert.nhwc import fold_flatten_linear
    from edge_pipeline.convert.onnx_export import export_onnx
    from edge_pipeline.convert.tflite_convert import convert_to_tflite

    folded, _ = fold_flatten_linear(module.eval(), shape)
    onnx_path = work / "model.onnx"
    rewrites = export_onnx(folded, shape, onnx_path)
    return convert_to_tflite(onnx_path, work, ["float32"], images01, None)["float32"], rewrites


def tflite_vs_torch(path: Path, module, inputs_nchw) -> float:
    import numpy as np
    import torch

    from edge_pipeline.convert.onnx_export import relative_max_error
    from edge_pipeline.convert.runtime import load_interpreter, run_tflite

    with torch.no_grad():
        reference = module.eval()(torch.from_numpy(inputs_nchw)).numpy()
    got = run_tflite(load_interpreter(path), [np.ascontiguousarray(inputs_nchw.transpose(0, 2, 3, 1))])
    return relative_max_error(got, reference)


def grouped_mobilenet(spec):
    """mobilenet_v2 with its 1x1 convs made grouped (4 groups) + shuffled by the restructure transform."""
    from edge_pipeline.compress.grouped import grouped_pointwise
    from edge_pipeline.compress.select import Selection
    from edge_pipeline.models import build_model

    model = build_model(spec)
    edit = grouped_pointwise(model, Selection(min_channels=16), groups=4, init="random")
    return model, f"{edit.summary['count']} pointwise convs grouped (4 groups) + shuffled"


def estimate_bn_statistics(model, shape, batches: int = 4) -> None:
    """BatchNorm running statistics from random inputs (cumulative average), so a randomly
    initialized network has activations of a trained one's scale. With PyTorch's default BN
    statistics the signal of a deep random net can vanish (grouped mobilenet_v2: logits ~1e-14),
    and then no float comparison means anything."""
    import torch

    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    saved = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    model.train()
    with torch.no_grad():
        for _ in range(batches):
            model(torch.randn(16, *shape[1:]))
    for bn, momentum in zip(bns, saved):
        bn.momentum = momentum
    model.eval()


def part_archs(args) -> dict:
    import numpy as np
    import torch

    from edge_pipeline.compress.pruning import Target, prune_channels
    from edge_pipeline.models import BaseSpec, build_model
    from edge_pipeline.models.counting import count_macs, count_params

    size = args.arch_size
    shape = (1, 3, size, size)
    gen = np.random.default_rng(0)
    images01 = gen.random((20, size, size, 3), dtype=np.float32)
    inputs = ((images01 - 0.5) / 0.25).transpose(0, 3, 1, 2).astype(np.float32)[:8]
    results = {}
    names = ["shufflenet_v2_x0_5", "resnet18", "mobilenet_v2", "grouped_pointwise(mobilenet_v2)"]
    for name in names:
        torch.manual_seed(0)
        spec = BaseSpec("torchvision:mobilenet_v2" if "grouped" in name else f"torchvision:{name}", 10, 3, size)
        note = None
        if "grouped" in name:
            model, note = grouped_mobilenet(spec)
        else:
            model = build_model(spec)
        estimate_bn_statistics(model, shape)
        macs0, params0 = count_macs(model, shape), count_params(model)
        started = time.perf_counter()
        edit = prune_channels(model, torch.zeros(shape), Target("macs", TARGET_MACS), "l1", "per_layer")
        prune_s = time.perf_counter() - started
        macs1 = count_macs(model, shape)
        row = {"input": list(shape), "macs": [macs0, macs1], "macs_kept": round(macs1 / macs0, 4),
               "within_5pct_of_target": abs(macs1 / macs0 - TARGET_MACS) <= 0.05 * TARGET_MACS,
               "params_kept": round(count_params(model) / params0, 4), "resized_modules": edit.summary["resized_modules"],
               "prunable_classes": edit.summary["classes"], "prune_seconds": round(prune_s, 1)}
        if note:
            row["restructure"] = note
        with tempfile.TemporaryDirectory(prefix="prune-bench-") as tmp:
            started = time.perf_counter()
            tflite, rewrites = export_float32(model, shape, Path(tmp), images01)
            row["onnx_rewrites"] = {k: v for k, v in rewrites.items() if v}
            row["export_seconds"] = round(time.perf_counter() - started, 1)
            row["tflite_bytes"] = tflite.stat().st_size
            row["tflite_vs_torch_relative_max_error"] = float(f"{tflite_vs_torch(tflite, model, inputs):.3g}")
            row["outputs_match"] = row["tflite_vs_torch_relative_max_error"] < 1e-4
        results[name] = row
        print(f"[archs] {name}: {json.dumps(row)}", file=sys.stderr)
    return results


# -- unstructured sparsity ---------------------------------------------------------------------


def sparse_worker(spec_path: str) -> int:
    """Subprocess (offline): onnx2tf -> SavedModel, then dense and EXPERIMENTAL_SPARSITY conversions."""
    import numpy as np

    from edge_pipeline.convert.tflite_worker import _block_network

    spec = json.loads(Path(spec_path).read_text())
    _block_network()
    os.chdir(spec["workdir"])
    import onnx2tf
    import tensorflow as tf

    saved = str(Path(spec["workdir"]) / "tf")
    onnx2tf.convert(input_onnx_file_path=spec["onnx"], output_folder_path=saved, non_verbose=True)
    calibration = np.load(spec["calibration"])

    def representative():
        for sample in calibration:
            yield [sample[None].astype(np.float32)]

    files = {}
    for name, optimizations, int8 in (
        ("float32_dense", [], False), ("float32_sparse", [tf.lite.Optimize.EXPERIMENTAL_SPARSITY], False),
        ("int8_dense", [tf.lite.Optimize.DEFAULT], True),
        ("int8_sparse", [tf.lite.Optimize.DEFAULT, tf.lite.Optimize.EXPERIMENTAL_SPARSITY], True),
    ):
        converter = tf.lite.TFLiteConverter.from_saved_model(saved)
        converter.optimizations = optimizations
        if int8:
            converter.representative_dataset = representative
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = converter.inference_output_type = tf.int8
        target = Path(spec["out_dir"]) / f"{name}.tflite"
        target.write_bytes(converter.convert())
        files[name] = str(target)
    Path(spec["result"]).write_text(json.dumps(files))
    return 0


def convert_dense_and_sparse(module, shape, work: Path, images01, calibration_nhwc) -> dict[str, Path]:
    import numpy as np

    from edge_pipeline.convert.nhwc import fold_flatten_linear
    from edge_pipeline.convert.onnx_export import export_onnx
    from edge_pipeline.convert.tflite_convert import ONNX2TF_SAMPLE_FILE, onnx2tf_sample_images, worker_env

    folded, _ = fold_flatten_linear(module.eval(), shape)
    onnx_path = work / "model.onnx"
    export_onnx(folded, shape, onnx_path)
    np.save(work / ONNX2TF_SAMPLE_FILE, onnx2tf_sample_images(images01))
    np.save(work / "calibration.npy", calibration_nhwc.astype(np.float32))
    spec = {"onnx": str(onnx_path), "workdir": str(work), "out_dir": str(work), "calibration": str(work / "calibration.npy"),
            "result": str(work / "result.json")}
    (work / "spec.json").write_text(json.dumps(spec))
    with open(work / "convert.log", "w") as log:
        code = subprocess.run([sys.executable, __file__, "--sparse-worker", str(work / "spec.json")], cwd=work,
                              env=worker_env(work), stdout=log, stderr=log).returncode
    if code:
        raise RuntimeError(f"sparse conversion failed ({code}); log: {(work / 'convert.log').read_text()[-2000:]}")
    return {k: Path(v) for k, v in json.loads((work / "result.json").read_text()).items()}


def tflite_accuracy(path: Path, data) -> float:
    import numpy as np

    from edge_pipeline.convert.runtime import load_interpreter, run_tflite

    xs, ys = zip(*data.batches("test"))
    logits = run_tflite(load_interpreter(path), [np.ascontiguousarray(x.transpose(0, 2, 3, 1)) for x in xs])
    return round(float(np.mean(np.argmax(logits, 1) == np.concatenate(ys))), 4)


def part_sparsity(args) -> dict:
    import numpy as np

    from edge_pipeline.compress.pruning.unstructured import keep_zeros, magnitude_prune, masks_from_edits
    from edge_pipeline.convert.inspect import inspect_tflite
    from edge_pipeline.data import calibration_batch
    from edge_pipeline.profiling.devices import get_device
    from edge_pipeline.profiling.runner import profile_model
    from edge_pipeline.stages.finetune import FinetuneConfig
    from edge_pipeline.training import cross_entropy, fit

    data = quickstart_data()
    baseline = train_baseline(data, 0.0, args.train_epochs)
    host = get_device("host")
    calibration = calibration_batch(data, 64, 0).permute(0, 2, 3, 1).numpy()
    mean, std = np.asarray(data.mean, np.float32), np.asarray(data.std, np.float32)
    images01 = np.clip(calibration * std + mean, 0, 1).repeat(3 // data.in_channels, axis=3)
    out = {"model": "vgg_small (quickstart baseline)", "runtime": "ai-edge-litert on this host, 1 thread", "levels": {}}
    for sparsity in args.sparsities:
        model = copy.deepcopy(baseline)
        row = {}
        if sparsity > 0:
            edit = magnitude_prune(model, sparsity, "global")
            row["accuracy_after_prune"] = test_accuracy(model, data)
            masks = masks_from_edits(model, [edit])
            fit(model, data, FinetuneConfig(epochs=args.sparse_epochs, lr=0.01), 0, cross_entropy(), f"sparse {sparsity}",
                after_step=keep_zeros(masks))
            row["weight_sparsity"] = edit.summary["sparsity"]
        row["accuracy_torch"] = test_accuracy(model, data)
        with tempfile.TemporaryDirectory(prefix="sparse-bench-") as tmp:
            files = convert_dense_and_sparse(model, data.input_shape, Path(tmp), images01, calibration)
            for name, path in files.items():
                profile = profile_model(path, host)
                info = inspect_tflite(path)
                row[name] = {"bytes": path.stat().st_size, "median_ms": profile["latency_ms"]["median"],
                             "valid": profile["valid"], "accuracy": tflite_accuracy(path, data),
                             "ops": info["ops"]}
        for precision in ("float32", "int8"):
            dense, sparse = row[f"{precision}_dense"], row[f"{precision}_sparse"]
            row[f"{precision}_size_ratio_sparse_over_dense"] = round(sparse["bytes"] / dense["bytes"], 3)
            row[f"{precision}_latency_ratio_sparse_over_dense"] = round(sparse["median_ms"] / dense["median_ms"], 3)
        out["levels"][str(sparsity)] = row
        print(f"[sparsity] {sparsity}: {json.dumps({k: v for k, v in row.items() if 'ratio' in k})}", file=sys.stderr)
    return out


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--sparse-worker":
        return sparse_worker(sys.argv[2])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="criteria,archs,sparsity")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=lambda s: [int(v) for v in s.split(",")], default=[1, 2, 8],
                        help="fine-tuning budgets in epochs, comma-separated (quickstart: 8)")
    parser.add_argument("--train-epochs", type=int, default=15, help="baseline epochs (quickstart: 15)")
    parser.add_argument("--bn-l1", type=float, default=0.01, help="Network Slimming penalty for the bn_scale baseline")
    parser.add_argument("--allocation", default="global", choices=["global", "per_layer"])
    parser.add_argument("--target-macs", type=float, default=TARGET_MACS, help="criteria part: fraction of MACs kept")
    parser.add_argument("--criteria", type=lambda s: s.split(","), default=["l1", "bn_scale", "taylor", "random"])
    parser.add_argument("--arch-size", type=int, default=64, help="input size of the torchvision models")
    parser.add_argument("--sparsities", type=lambda s: [float(v) for v in s.split(",")], default=[0.0, 0.5, 0.8, 0.9])
    parser.add_argument("--sparse-epochs", type=int, default=3)
    args = parser.parse_args()
    started = time.perf_counter()
    result = {}
    for part in args.parts.split(","):
        result[part] = {"criteria": part_criteria, "archs": part_archs, "sparsity": part_sparsity}[part](args)
    result["wall_seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
