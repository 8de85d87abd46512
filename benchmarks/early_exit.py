#!/usr/bin/env python
"""What self-distilled early exits buy on this host, measured in one run per model, as JSON.

For each model (default: resnet20 and vgg_small on digits at 32 px, torchvision mobilenet_v2 at 64 px)
a recipe runs train -> early_exit -> quantize (int8) -> export -> profile (host, int8), so the
numbers come from the same code a user runs:
- the device's adaptive inference at the threshold chosen on validation from the int8 files' own
  logits (torch's choice is reported next to it): test accuracy against the
  plain int8 model and mean latency relative to it (target: at most 0.5 points lost, 0.6x or less);
- the worst case (no exit fires: every segment and branch) against the plain model (target: <= 1.15x);
- the best measured point within 0.5 points of the plain model on the device curve (for reference:
  that one is picked on test inputs);
- torch, on the test split: FastBERT self-distillation vs joint (BranchyNet) training of the same
  branches at equal epochs from the same trained model, and entropy vs max-softmax, each at its own
  threshold chosen on validation (expected MACs relative to the plain model, and test accuracy).
Anchors: FastBERT reports 1-12x speed-ups at small accuracy loss; Shallow-Deep Networks about half
the average compute at equal accuracy on CIFAR-10.

Usage: python benchmarks/early_exit.py [--models resnet20,vgg_small,torchvision:mobilenet_v2]
       [--epochs 15] [--exit-epochs 5] [--size 32] [--tv-size 64] [--out DIR] [--quick]
(--quick: 16 px, 3 + 2 epochs, resnet20 and vgg_small only: a smoke run of the whole path.)
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

RECIPE = """\
name: {name}
seed: 0
data: {{dataset: digits, image_size: {size}, batch_size: 64}}
model: {{arch: "{arch}", width: {width}}}
stages:
  - train: {{epochs: {epochs}, lr: {lr}}}
  - early_exit: {{epochs: {exit_epochs}, lr: 0.05}}
  - quantize: {{mode: int8, calibration_samples: 256}}
  - export: {{format: tflite}}
  - profile: {{devices: [host], precisions: [int8], baseline: false}}
"""


def run_recipe(folder: Path, arch: str, size: int, epochs: int, exit_epochs: int) -> tuple[Path, float]:
    name = arch.replace("torchvision:", "tv-").replace("_", "-")
    lr = 0.05 if not arch.startswith("torchvision:") else 0.02
    recipe = folder / f"{name}.yaml"
    recipe.write_text(RECIPE.format(name=name, size=size, arch=arch, width=1.0, epochs=epochs, lr=lr, exit_epochs=exit_epochs))
    out = folder / name
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "edge_pipeline.cli", "run", str(recipe), "--out", str(out)], check=True, cwd=folder,
                   stdout=subprocess.DEVNULL)
    return out, time.perf_counter() - started


def run_data(run: Path):
    """The data a benchmark run trained on, built from its recipe as the pipeline built it."""
    from edge_pipeline.data import build_data
    from edge_pipeline.recipe import load_recipe

    recipe = load_recipe(next(run.parent.glob(f"{run.name}.yaml")))
    return build_data(recipe.data, seed=recipe.seed)


def torch_comparison(run: Path, exit_epochs: int, max_drop: float) -> dict[str, Any]:
    """Self-distillation vs joint training of the same branches from the same trained model, and
    entropy vs max-softmax, on the test split (threshold chosen on validation for each)."""
    import torch

    from edge_pipeline.compress.early_exit import (
        ExitChain,
        attach_exits,
        choose_cuts,
        choose_threshold,
        cumulative_costs,
        exit_logits,
        freeze_backbone,
        joint_loss,
        outcome,
        self_distillation,
    )
    from edge_pipeline.models.store import load_model
    from edge_pipeline.stages.early_exit import EarlyExitConfig
    from edge_pipeline.training import fit

    data = run_data(run)
    trained = load_model(run / "01-train")
    out: dict[str, Any] = {}
    for mode in ("self_distillation", "joint"):
        model = copy.deepcopy(trained)
        cuts = choose_cuts(model.module, data.input_shape, "auto")
        cfg = EarlyExitConfig(epochs=exit_epochs, lr=0.05 if mode == "self_distillation" else 0.01, joint=mode == "joint")
        torch.manual_seed(0)
        attach_exits(model, cuts, data.num_classes, cfg.conv_width, cfg.pool_size, {})
        frozen = freeze_backbone(model.module) if mode == "self_distillation" else []
        chain = ExitChain(model.module, data.input_shape, frozen_backbone=bool(frozen))
        loss = self_distillation(cfg.temperature) if frozen else joint_loss()
        fit(chain, data, cfg, 0, loss, f"benchmark {mode}")
        chain.frozen_backbone = False
        val, val_y = exit_logits(chain, data.loader("val", batch_size=256))
        test, test_y = exit_logits(chain, data.loader("test", batch_size=256))
        segments, branches = chain.segment_macs()
        costs = cumulative_costs(segments, branches)
        for measure in ("entropy", "max_softmax"):
            chosen, _ = choose_threshold(val, val_y, measure, costs, max_drop)
            result = outcome(test, test_y, measure, chosen.threshold, costs)
            out[f"{mode}/{measure}"] = {
                "threshold": chosen.threshold, "test_accuracy": round(result.accuracy, 4),
                "final_classifier_accuracy": round(float((test[-1].argmax(-1) == test_y).mean()), 4),
                "expected_macs_ratio": round(result.expected_macs / sum(segments), 3), "exit_counts": result.exit_counts,
            }
    return out


def exit_cost_analysis(run: Path, block: dict[str, Any]) -> dict[str, Any]:
    """Where the time goes: what leaving at each exit costs on the device (x plain), and the mean an
    oracle would reach with these branches (each input leaves at the first exit that answers it
    right, on the int8 chain over the device's test inputs): the gap between the oracle and the
    measured mean is the uncertainty measure's, the gap between the oracle and 0 the branches' and
    the model's cost structure."""
    import numpy as np

    from edge_pipeline.convert.segments import ChainRunner

    costs = [c / block["plain_ms"] for c in block.get("exit_ms") or []]
    if not costs:
        return {}
    chain = json.loads((run / "04-export" / "exits.json").read_text())
    segments = chain["precisions"][block["precision"]]["segments"]
    runner = ChainRunner([run / "04-export" / s["file"] for s in segments], [s["features_layout"] for s in segments])
    data = run_data(run)
    xs, ys = zip(*data.batches("test", limit=block["samples"]))
    logits = runner.all_exits(np.concatenate(xs).transpose(0, 2, 3, 1))
    right = logits.argmax(-1) == np.concatenate(ys)[None, :]
    first_right = np.where(right.any(axis=0), right.argmax(axis=0), len(costs) - 1)
    return {"exit_cost_ratios": [round(c, 3) for c in costs],
            "oracle_mean_latency_ratio": round(float(np.mean(np.asarray(costs)[first_right])), 3),
            "oracle_exit_counts": np.bincount(first_right, minlength=len(costs)).tolist()}


def device_figures(run: Path, max_drop: float) -> dict[str, Any]:
    metrics = json.loads((run / "metrics.json").read_text())
    profile_rel = next(p for s in metrics["stages"] for p in s.get("profiles", []))
    block = json.loads((run / profile_rel).read_text())["early_exit"]
    chosen = next(t for t in block["thresholds"] if t["threshold"] == block["chosen"])
    within = [t for t in block["thresholds"] if t["accuracy"] >= block["plain_accuracy"] - max_drop - 1e-9]
    best = min(within, key=lambda t: t["mean_ms"]) if within else None
    details = json.loads((run / "02-early_exit" / "details.json").read_text())
    return {
        "plain_int8_ms": block["plain_ms"], "plain_int8_accuracy": block["plain_accuracy"], "samples": block["samples"],
        "threshold_chosen_in_torch": details["threshold"],
        "chosen": {"threshold": block["chosen"], "accuracy": chosen["accuracy"], "mean_ms": chosen["mean_ms"], "p90_ms": chosen["p90_ms"],
                   "accuracy_change_points": round(100 * (chosen["accuracy"] - block["plain_accuracy"]), 2),
                   "mean_latency_ratio": round(chosen["mean_ms"] / block["plain_ms"], 3), "exit_counts": chosen["exit_counts"]},
        "worst_case_ratio": round(block["worst_case_ms"] / block["plain_ms"], 3),
        **exit_cost_analysis(run, block),
        "best_within_drop_on_test": None if best is None else {
            "threshold": best["threshold"], "accuracy": best["accuracy"],
            "mean_latency_ratio": round(best["mean_ms"] / block["plain_ms"], 3)},
        "torch": {"plain_macs": details["plain_macs"],
                  "worst_case_macs_ratio": round(details["worst_case_macs"] / details["plain_macs"], 3),
                  "exit_test_accuracy": [e["test_accuracy"] for e in details["exits"]],
                  "expected_macs_ratio": details["test"]["macs_ratio"]},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet20,vgg_small,torchvision:mobilenet_v2")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--exit-epochs", type=int, default=5)
    parser.add_argument("--size", type=int, default=32, help="image size for the zoo models")
    parser.add_argument("--tv-size", type=int, default=64, help="image size for torchvision models")
    parser.add_argument("--max-drop", type=float, default=0.005)
    parser.add_argument("--out", help="folder for the runs (default: a fresh temp folder)")
    parser.add_argument("--quick", action="store_true", help="16 px, 3 + 2 epochs, resnet20 and vgg_small: a smoke run")
    args = parser.parse_args()
    if args.quick:
        args.models, args.epochs, args.exit_epochs, args.size = "resnet20,vgg_small", 3, 2, 16
    folder = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="edge-bench-exits-"))
    folder.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"host_note": "latency measured by the device agent on this host (ai-edge-litert, 1 thread), "
                                            "each input timed end to end in Python", "models": {}}
    for arch in args.models.split(","):
        size = args.tv_size if arch.startswith("torchvision:") else args.size
        run, seconds = run_recipe(folder, arch, size, args.epochs, args.exit_epochs)
        results["models"][arch] = {"image_size": size, "pipeline_seconds": round(seconds, 1), **device_figures(run, args.max_drop),
                                   "training_and_measure": torch_comparison(run, args.exit_epochs, args.max_drop)}
        print(json.dumps({arch: results["models"][arch]}), file=sys.stderr, flush=True)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
