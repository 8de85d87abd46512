"""How faithful a TFLite file is: accuracy, agreement with torch, logit cosine and max error."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..ui import progress
from .onnx_export import relative_max_error
from .runtime import load_interpreter, run_tflite


def tflite_logits(path: Path, data, split: str = "test") -> tuple[np.ndarray, np.ndarray]:
    """Logits of the TFLite model on a split (NHWC inputs), and the labels."""
    interpreter = load_interpreter(path)
    logits, labels = [], []
    total = len(getattr(data, split))
    with progress(f"evaluate {Path(path).name}", total) as bar:
        for x, y in data.batches(split):
            logits.append(run_tflite(interpreter, [x.transpose(0, 2, 3, 1)]))
            labels.append(y)
            bar.advance(len(y))
    return np.concatenate(logits), np.concatenate(labels)


def fidelity(logits: np.ndarray, labels: np.ndarray, reference: np.ndarray) -> dict[str, Any]:
    a = logits.astype(np.float64)
    b = reference.astype(np.float64)
    cos = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)
    return {
        "accuracy": round(float((logits.argmax(1) == labels).mean()), 6),
        "agreement": round(float((logits.argmax(1) == reference.argmax(1)).mean()), 6),
        "cosine_mean": round(float(cos.mean()), 6),
        "cosine_min": round(float(cos.min()), 6),
        "max_rel_error": float(f"{relative_max_error(logits, reference):.3e}"),
    }
