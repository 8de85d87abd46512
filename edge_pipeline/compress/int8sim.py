"""int8 as the TFLite converter will do it, simulated in torch: cheap enough to compare methods.

Weights: symmetric int8 in [-127, 127], per output channel (or per tensor), on the weights with the
following BatchNorm folded in, since that is what the converter quantizes. Activations: the input of
every convolution and Linear, asymmetric int8 over the calibrated [min, max] (zero always exactly
representable), as the converter's min/max calibration does. Adds, pools and the logits are not
quantized here, so the simulation flatters the file a little; the exported file is always measured
too (see the export stage), this is for ranking methods and correcting biases.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .equalize import WEIGHTED, following_norm, norm_factor, trace

QMAX = 127


def fold_factors(model: nn.Module) -> dict[str, torch.Tensor]:
    """Per weighted layer: the BatchNorm factor gamma / sqrt(var + eps) folded into its weights
    (ones where no BatchNorm follows). Models fx cannot trace get ones everywhere."""
    modules = dict(model.named_modules())
    try:
        graph = trace(model, "bias_correction")
    except Exception:
        graph = None
    factors = {}
    for name, m in modules.items():
        if isinstance(m, WEIGHTED):
            norm = following_norm(graph, modules, name) if graph is not None else None
            channels = m.out_channels if isinstance(m, nn.Conv2d) else m.out_features
            factors[name] = norm_factor(norm, channels)
    return factors


def quantized_weight(weight: torch.Tensor, factor: torch.Tensor, per_channel: bool) -> torch.Tensor:
    """`weight` after int8 rounding on the folded grid, expressed back in the unfolded weights."""
    shape = (-1, *[1] * (weight.dim() - 1))
    safe = torch.where(factor.abs() > 1e-12, factor, torch.ones_like(factor)).view(shape)
    folded = weight * safe
    peak = folded.flatten(1).abs().amax(1).view(shape) if per_channel else folded.abs().max()
    scale = (peak / QMAX).clamp_min(1e-12)
    return torch.round(folded / scale).clamp(-QMAX, QMAX) * scale / safe


def activation_ranges(model: nn.Module, inputs: torch.Tensor, batch_size: int = 64) -> dict[str, tuple[float, float]]:
    """[min, max] of the input of every weighted layer over `inputs` (the calibration set)."""
    names: dict[nn.Module, str] = {m: n for n, m in model.named_modules() if isinstance(m, WEIGHTED)}
    ranges: dict[str, tuple[float, float]] = {}

    def hook(module, args):
        x = args[0]
        low, high = ranges.get(names[module], (0.0, 0.0))  # zero is always inside the int8 range
        ranges[names[module]] = (min(low, float(x.min())), max(high, float(x.max())))

    with _hooks(model, hook, names), torch.no_grad():
        for start in range(0, len(inputs), batch_size):
            model(inputs[start : start + batch_size])
    return ranges


def fake_quantize(x: torch.Tensor, low: float, high: float) -> torch.Tensor:
    scale = max(high - low, 1e-12) / 255
    zero_point = round(-128 - low / scale)
    return (torch.round(x / scale + zero_point).clamp(-128, 127) - zero_point) * scale


@contextmanager
def simulated(model: nn.Module, calibration: torch.Tensor, per_channel: bool) -> Iterator[nn.Module]:
    """`model` with int8 weights and int8 inputs to its weighted layers, restored on exit."""
    model.eval()
    ranges = activation_ranges(model, calibration)
    factors = fold_factors(model)
    modules = dict(model.named_modules())
    saved = {name: modules[name].weight.detach().clone() for name in factors}
    names: dict[nn.Module, str] = {modules[n]: n for n in factors}

    def hook(module, args):
        low, high = ranges.get(names[module], (0.0, 0.0))
        return (fake_quantize(args[0], low, high), *args[1:])

    try:
        with torch.no_grad():
            for name, factor in factors.items():
                modules[name].weight.copy_(quantized_weight(saved[name], factor, per_channel))
        with _hooks(model, hook, names):
            yield model
    finally:
        with torch.no_grad():
            for name, weight in saved.items():
                modules[name].weight.copy_(weight)


@contextmanager
def _hooks(model: nn.Module, hook, names: dict[nn.Module, str]) -> Iterator[None]:
    handles = [m.register_forward_pre_hook(hook) for m in names]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def weight_error_output(layer: Any, x: torch.Tensor, error: torch.Tensor) -> torch.Tensor:
    """Mean over the batch (and positions) of what the weight error adds to each output channel."""
    if isinstance(layer, nn.Linear):
        return F.linear(x, error).reshape(-1, error.shape[0]).mean(0)
    y = F.conv2d(x, error, None, layer.stride, layer.padding, layer.dilation, layer.groups)
    return y.mean((0, 2, 3))
