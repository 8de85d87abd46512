"""Tiny real TFLite models for profiling tests, made once per session through the project's own
export path (torch -> ONNX -> onnx2tf -> TFLite float32 + int8), ~15 s on 2 cores."""

from __future__ import annotations

from pathlib import Path

import numpy as np

SIZE = 16
CHANNELS = 3
CLASSES = 4


def make_tiny_models(out_dir: Path) -> dict[str, Path]:
    """{"float32": path, "int8": path, "samples": path to 8 NHWC inputs (normalized floats)}."""
    import torch
    from torch import nn

    from edge_pipeline.convert.onnx_export import export_onnx
    from edge_pipeline.convert.tflite_convert import convert_to_tflite

    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(CHANNELS, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1, stride=2), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, CLASSES),
    ).eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = out_dir / "tiny.onnx"
    export_onnx(net, (1, CHANNELS, SIZE, SIZE), onnx_path)
    rng = np.random.default_rng(0)
    images01 = rng.random((20, SIZE, SIZE, CHANNELS), dtype=np.float32)
    calibration = (images01 - 0.5) / 0.25
    files = convert_to_tflite(onnx_path, out_dir, ["float32", "int8"], images01, calibration)
    samples = out_dir / "samples.npy"
    np.save(samples, calibration[:8].astype(np.float32))
    return {"float32": Path(files["float32"]), "int8": Path(files["int8"]), "samples": samples}


_SHARED: dict[str, dict[str, Path]] = {}


def shared_tiny_models(tmp_path_factory) -> dict[str, Path]:
    """One conversion per test session, shared by the profiling and report fixtures."""
    if "models" not in _SHARED:
        _SHARED["models"] = make_tiny_models(tmp_path_factory.mktemp("tiny-models"))
    return _SHARED["models"]
