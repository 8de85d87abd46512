"""Device outputs vs this host's, for the same image files and the same runner.

Both sides run `edge_predict.py` on the release's `samples/` images, so decoding, resizing,
channel handling, normalization and input quantization are the same code; what may differ is the
runtime's arithmetic on another CPU. The release passes when every top-1 class agrees (a
disagreement counts only if the two classes' host outputs differ by more than the tolerance: a
near-tie may flip) and no output value differs by more than the precision's tolerance:
- a quantized output (int8, int16x8 files): one quantization step (the output scale);
- float outputs: a fraction of the largest host output magnitude: float32 1e-4, float16 1e-3
  (both run float32 kernels), dynamic_int8 5e-2 (activations are quantized on the fly per run, by
  kernels that differ between CPUs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

RELATIVE_TOLERANCE = {"float32": 1e-4, "float16": 1e-3, "dynamic_int8": 5e-2, "int8": 1e-2, "int16x8": 1e-2}
DEFAULT_RELATIVE_TOLERANCE = 1e-2


def outputs_by_file(result: dict[str, Any]) -> dict[str, np.ndarray]:
    """{image file name: output vector} of a runner result (paths differ between host and device)."""
    return {Path(p["file"]).name: np.asarray(p["output"], np.float32) for p in result["predictions"]}


def tolerance(precision: str, output: dict[str, Any] | None, reference: np.ndarray) -> float:
    """`output`: the runner's facts about the output tensor (dtype, quantization)."""
    quantization = (output or {}).get("quantization") or {}
    step = quantization.get("scale") if isinstance(quantization, dict) else None
    if step:
        return float(step) * 1.0001
    relative = RELATIVE_TOLERANCE.get(precision, DEFAULT_RELATIVE_TOLERANCE)
    return relative * max(float(np.max(np.abs(reference))) if reference.size else 0.0, 1e-6)


def compare(device: dict[str, Any], host: dict[str, Any], precision: str, labels: dict[str, int] | None = None) -> dict[str, Any]:
    """The verification figures (runner results of both sides); `passed`: may the release become current."""
    got, ref = outputs_by_file(device), outputs_by_file(host)
    if set(got) != set(ref):
        missing = sorted(set(ref) - set(got))[:3] or sorted(set(got) - set(ref))[:3]
        return {"samples": len(ref), "outputs_verified": True, "passed": False,
                "reason": f"the device classified other files than the host ({', '.join(missing)})"}
    names = sorted(ref)
    a = np.stack([got[n] for n in names]) if names else np.zeros((0, 0), np.float32)
    b = np.stack([ref[n] for n in names]) if names else np.zeros((0, 0), np.float32)
    if a.shape != b.shape:
        return {"samples": len(names), "outputs_verified": True, "passed": False,
                "reason": f"output shape {list(a.shape)} on the device, {list(b.shape)} on the host"}
    tol = tolerance(precision, host.get("output"), b)
    diff = float(np.max(np.abs(a - b))) if a.size else 0.0
    device_top, host_top = a.argmax(1), b.argmax(1)
    agree = device_top == host_top
    # A flipped near-tie: the host itself rates the device's pick within the tolerance of its own.
    rows = np.arange(len(names))
    ties = ~agree & (b[rows, host_top] - b[rows, device_top] <= tol)
    figures: dict[str, Any] = {
        "samples": len(names), "outputs_verified": True,
        "top1_agreement": round(float(agree.mean()) if len(names) else 1.0, 6),
        "max_abs_diff": float(f"{diff:.6g}"), "tolerance": float(f"{tol:.6g}"), "near_ties": int(ties.sum()),
    }
    if labels:
        truth = np.asarray([labels.get(n, -1) for n in names])
        known = truth >= 0
        if known.any():
            figures["accuracy"] = round(float((device_top[known] == truth[known]).mean()), 6)
            figures["host_accuracy"] = round(float((host_top[known] == truth[known]).mean()), 6)
    failed_top1 = int((~agree & ~ties).sum())
    figures["passed"] = bool(len(names) > 0 and diff <= tol and failed_top1 == 0)
    if not figures["passed"]:
        figures["reason"] = ("no samples" if not names else
                             f"{failed_top1} of {len(names)} top-1 classes differ from the host" if failed_top1 else
                             f"outputs differ from the host by up to {diff:.3g} (tolerance {tol:.3g})")
    return figures
