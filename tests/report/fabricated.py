"""A schema-valid run folder written by hand (shapes and figures copied from a real tiny run), for
report tests that need every section without running the pipeline. Text fields that come from
files carry markup (`EVIL`) so the tests can check it is shown, never run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

EVIL = "<script>document.title='pwned'</script>"
EVIL_LAYER = "features.<b>9</b>"

RECIPE_YAML = f"""\
name: tiny
seed: 0
data: {{dataset: digits, image_size: 16, batch_size: 64}}
model: {{arch: vgg_small, width: 0.5}}
# a comment with markup: {EVIL}
stages:
- train: {{epochs: 3, lr: 0.05}}
"""


def _profile(device: str, precision: str, median: float, valid: bool = True, emulated: bool = False,
             match: bool = True) -> dict[str, Any]:
    return {
        "device": device, "model": f"model_{precision}.tflite", "model_sha256": f"{precision:0<64}"[:64],
        "model_size_bytes": {"float32": 19804, "int8": 14768}[precision],
        "runtime": {"name": "ai-edge-litert", "version": "2.1.0"}, "threads": 1,
        "arch": "aarch64" if emulated else "x86_64", "emulated": emulated, "init_ms": 9.9, "first_inference_ms": 0.04,
        "warmup": {"runs": 2, "mean_ms": median},
        "latency_ms": {"runs": 200, "min": median * 0.9, "median": median, "mean": median * 1.1, "p90": median * 1.4,
                       "max": median * 3, "std": median * 0.2},
        "peak_rss_mb": 49.2, "valid": valid, "invalid_reasons": [] if valid else [f"noisy run {EVIL}"],
        "outputs_check": {"samples": 8, "reference": "host", "top1_agreement": 1.0 if match else 0.5, "match": match},
    }


PROFILES = {
    "host__model_float32.json": _profile("host", "float32", 0.009),
    "host__model_int8.json": _profile("host", "int8", 0.014),
    "qemu-aarch64__model_float32.json": _profile("qemu-aarch64", "float32", 1.38, emulated=True),
    "qemu-aarch64__model_int8.json": _profile("qemu-aarch64", "int8", 0.148, valid=False, emulated=True, match=False),
}

METRICS = {
    "recipe": "tiny", "version": "0.1.0",
    "data": {"dataset": "digits", "classes": 10, "samples": {"train": 1257, "val": 270, "test": 270}, "fingerprint": "f"},
    "stages": [
        {"name": "train", "type": "train", "status": "done", "seconds": 67.2,
         "model": {"params": 27058, "macs": 617088, "size_bytes": 112456, "accuracy": 1.0}},
        {"name": "restructure", "type": "restructure", "status": "done", "seconds": 16.1,
         "model": {"params": 11906, "macs": 131968, "size_bytes": 52224, "accuracy": 0.2296}},
        {"name": "prune", "type": "prune", "status": "cached", "seconds": 7.6,
         "model": {"params": 3414, "macs": 47552, "size_bytes": 17818, "accuracy": 0.1}},
        {"name": "finetune", "type": "finetune", "status": "done", "seconds": 28.9,
         "model": {"params": 3414, "macs": 47552, "size_bytes": 17818, "accuracy": 0.8889}},
        {"name": "quantize", "type": "quantize", "status": "done", "seconds": 1.4},
        {"name": "export", "type": "export", "status": "done", "seconds": 46.4, "artifacts": [
            {"format": "tflite", "precision": "float32", "path": "06-export/model_float32.tflite", "size_bytes": 19804,
             "accuracy": 0.888889, "ops": {"CONV_2D": 7}},
            {"format": "tflite", "precision": "int8", "path": "06-export/model_int8.tflite", "size_bytes": 14768,
             "accuracy": 0.874, "ops": {"CONV_2D": 7, "TRANSPOSE": 2}}]},
        {"name": "profile", "type": "profile", "status": "done", "seconds": 9.7,
         "profiles": [f"profiles/{name}" for name in PROFILES]},
    ],
}

DETAILS = {
    "02-restructure": {"order": ["depthwise_separable"], "calibration_samples": 256, "transforms": {"depthwise_separable": {
        "replaced": 5, "params_before": 27058, "params_after": 11906, "macs_before": 617088, "macs_after": 131968,
        "reconstruction": {"mean": 0.7367, "max": 0.8058, "logits_rel_error": 0.9006, "top1_agreement": 0.2734,
                           "bn_refreshed": 5, "before_bn_refresh": {"top1_agreement": 0.09375}},
        "edit": {"skipped": [{"path": EVIL_LAYER, "reason": f"too few channels {EVIL}"}]}}}},
    "03-prune": {"method": "l1", "target": {"kind": "ratio", "value": 0.5}, "rounds": [{"step": 1}],
                 "macs": [131968, 47552], "params": [11906, 3414],
                 "prune": {"allocation": "per_layer", "unprunable_because": ["model output (logits)"]},
                 "channels": {"features.0": [8, 4], "features.3.1": [8, 4], EVIL_LAYER: [16, 4], "classifier.1": [64, 32]}},
    "04-finetune": {"history": [{"epoch": 1}, {"epoch": 2}, {"epoch": 3}], "teacher": "train", "objective": "logits",
                    "final_terms": {"kd": 4.108, "ce": 0.6818}},
    "05-quantize": {"plan": {"modes": ["int8"]}, "methods": [
        {"method": "ptq", "seconds": 0.0, "float_accuracy": 0.888889, "int8_accuracy": 0.61, "int8_agreement": 0.64},
        {"method": "equalize", "seconds": 0.4, "float_accuracy": 0.888889, "int8_accuracy": 0.874, "int8_agreement": 0.99,
         "iterations": 3, "pairs": [{"first": EVIL_LAYER, "second": "features.3", "spread_before": 1000.0, "spread_after": 2.1}],
         "skipped": [{"layer": "features.9", "reason": f"features.10 (ReLU6) is not scale-equivariant {EVIL}"}], "absorbed": []},
        {"method": "bias_correction", "seconds": 0.2, "float_accuracy": 0.888889, "int8_accuracy": 0.881, "int8_agreement": 0.995,
         "corrected": [{"layer": "features.0", "max_shift": 0.01}], "skipped": [], "samples": 256}]},
    "06-export": {
        "onnx_vs_torch_rel_error": 3.843e-07, "float_accuracy": 0.888889,
        "precisions": {
            "float32": {"accuracy": 0.888889, "agreement": 1.0, "cosine_mean": 1.0, "cosine_min": 1.0,
                        "max_rel_error": 3.681e-07, "size_bytes": 19804, "transposes": 0},
            "int8": {"accuracy": 0.874, "agreement": 0.9926, "cosine_mean": 0.99965, "cosine_min": 0.99443,
                     "max_rel_error": 0.07579, "size_bytes": 14768, "transposes": 2}},
        "float_fallback": {},
        "diagnosis": {"int8": {"samples": 32, "float_ops": 16, "matched": 16, "methods": {"graph": 16}, "verified": True,
                               "notes": [], "ranked": [
            {"layer": "features.14.1", "op": "CONV_2D", "error": 0.031, "added": 0.0084, "rel_rmse": 0.0311, "cosine": 0.9995,
             "method": "graph", "quant_dtype": "int8"},
            {"layer": EVIL_LAYER, "op": "DEPTHWISE_CONV_2D", "error": 0.0234, "added": 0.0082, "rel_rmse": 0.02,
             "cosine": 0.9998, "method": "graph", "quant_dtype": "int8"}]}},
        "gates": {"results": {"int8": ["accuracy drop 1.49 points > 1.00"]}},
        "compatibility": [
            {"device": "host", "precision": "int8", "runtime": "ai-edge-litert", "version": "2.1.0", "status": "ok",
             "method": "loaded", "problems": [], "fix": None, "detail": "loaded"},
            {"device": "old-pi", "precision": "int8", "runtime": "tflite-runtime", "version": "2.14.0",
             "status": "incompatible", "method": "rules",
             "problems": [{"op": "FULLY_CONNECTED", "version": 12, "reason": f"newer than the runtime {EVIL}"}],
             "fix": "export with an older converter"}]},
}

MANIFEST = {"recipe": "tiny", "versions": {"edge-pipeline": "0.1.0+abc", "torch": "2.14.1", "tensorflow": "2.19.0",
                                           "onnx2tf": "1.29.24", "ai-edge-litert": "2.1.0"}, "stages": []}


def fabricated_run(root: Path) -> Path:
    """Write the run folder at `root` (metrics, manifest, resolved recipe, details, profiles)."""
    (root / "profiles").mkdir(parents=True)
    (root / "metrics.json").write_text(json.dumps(METRICS))
    (root / "manifest.json").write_text(json.dumps(MANIFEST))
    (root / "recipe.resolved.yaml").write_text(RECIPE_YAML)
    for folder, details in DETAILS.items():
        (root / folder).mkdir()
        (root / folder / "details.json").write_text(json.dumps(details))
    for name, profile in PROFILES.items():
        (root / "profiles" / name).write_text(json.dumps(profile))
    return root
