"""Activation statistics on calibration data, the raw material of int8 diagnosis."""

from __future__ import annotations

import torch
from torch import nn

from ..ui import progress

OBSERVED = (nn.Conv2d, nn.Linear, nn.BatchNorm2d, nn.ReLU, nn.ReLU6, nn.Hardswish, nn.SiLU)


@torch.no_grad()
def activation_ranges(model: nn.Module, inputs: torch.Tensor, batch_size: int = 64) -> list[dict]:
    """Per observed layer: min, max, the 99.99th percentile of |x|, and `outlier_ratio`
    = max|x| / p99.99 (how much of the int8 range a few extreme values waste)."""
    names = {m: n for n, m in model.named_modules()}
    outputs: dict[str, list[torch.Tensor]] = {}
    lows: dict[str, float] = {}
    highs: dict[str, float] = {}

    def hook(module, _inp, out):
        # Read now: an in-place activation after this layer would overwrite `out`.
        name = names[module]
        outputs.setdefault(name, []).append(out.detach().flatten().abs().float())
        lows[name] = min(lows.get(name, float("inf")), float(out.min()))
        highs[name] = max(highs.get(name, float("-inf")), float(out.max()))

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, OBSERVED)]
    model.eval()
    try:
        with progress("calibrate", len(inputs)) as bar:
            for start in range(0, len(inputs), batch_size):
                chunk = inputs[start : start + batch_size]
                model(chunk)
                bar.advance(len(chunk))
    finally:
        for h in handles:
            h.remove()
    report = []
    for name, parts in outputs.items():
        values = torch.cat(parts)
        if values.numel() > 2_000_000:  # quantile() is limited in size; a strided sample is plenty
            values = values[:: values.numel() // 2_000_000 + 1]
        p = float(torch.quantile(values, 0.9999))
        peak = float(values.max())
        report.append({
            "layer": name, "min": round(lows[name], 6), "max": round(highs[name], 6),
            "p9999_abs": round(p, 6), "outlier_ratio": round(peak / p, 3) if p > 0 else 1.0,
        })
    return report
