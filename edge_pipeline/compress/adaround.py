"""AdaRound (Nagel et al. 2020, "Up or Down? Adaptive Rounding for Post-Training Quantization").

Rounding each weight to the nearest int8 step is not what minimizes a layer's output error. For each
convolution and Linear, AdaRound learns per weight whether to round down or up: the rounded weights
are s * clip(floor(W/s) + h(V), -127, 127) with h a rectified sigmoid, trained to reproduce the
layer's float output on calibration inputs, with a regularizer (annealed from beta 20 to 2) that
pushes every h to exactly 0 or 1.

The result is left *exactly on the grid the TFLite converter computes* (BatchNorm folded, symmetric
[-127, 127], per channel or per tensor, scale = max|w| / 127): the element that sets a channel's
maximum is already an integer step (127), so it is never moved and the converter derives the same
scale; every other weight is stored as q * s (unfolded), so the converter's own rounding returns q
and changes nothing. Tests read the int8 file back to check it.

Why not a library: aimet-torch (the reference implementation; 2.42 installs on our torch) runs
AdaRound inside its QuantSim with its own encodings config and brings ~20 runtime dependencies
(see equalize.py); what we need, rounding that lands exactly on the TFLite converter's grid with
BatchNorm folded, is the ~100 lines below. torch.ao has no AdaRound.
"""

from __future__ import annotations

import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .int8sim import QMAX, fold_factors
from .probe import feed_to

ZETA, GAMMA = 1.1, -0.1  # the rectified sigmoid's stretch (paper's values)


@torch.no_grad()
def layer_inputs(model: nn.Module, layer: nn.Module, inputs: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """What `layer` receives over `inputs`, stopping each pass there."""
    seen: list[torch.Tensor] = []
    feed_to(model, layer, inputs, lambda x: seen.append(x.clone()), batch_size=batch_size)
    return torch.cat(seen) if seen else torch.empty(0)


def _apply(layer: Any, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    if isinstance(layer, nn.Linear):
        return F.linear(x, weight)
    return F.conv2d(x, weight, None, layer.stride, layer.padding, layer.dilation, layer.groups)


def _rectified_sigmoid(v: torch.Tensor) -> torch.Tensor:
    return (torch.sigmoid(v) * (ZETA - GAMMA) + GAMMA).clamp(0, 1)


def grid(folded: torch.Tensor, per_channel: bool) -> torch.Tensor:
    """The converter's scale, shaped to broadcast over the weights."""
    shape = (-1, *[1] * (folded.dim() - 1))
    peak = folded.flatten(1).abs().amax(1).view(shape) if per_channel else folded.abs().max().expand(folded.shape[0]).view(shape)
    return (peak / QMAX).clamp_min(1e-12)


def round_layer(layer: Any, factor: torch.Tensor, x: torch.Tensor, per_channel: bool, iterations: int,
                regularization: float, batch_size: int, generator: torch.Generator) -> dict[str, Any]:
    """Learn the rounding of one layer and store its weights on the converter's grid."""
    shape = (-1, *[1] * (layer.weight.dim() - 1))
    safe = torch.where(factor.abs() > 1e-12, factor, torch.ones_like(factor)).view(shape)
    folded = layer.weight.detach() * safe
    scale = grid(folded, per_channel)
    low = torch.floor(folded / scale)
    rest = folded / scale - low
    # Start where nearest rounding would be: h(V) = rest.
    v = (-torch.log((ZETA - GAMMA) / (rest.clamp(1e-4, 1 - 1e-4) - GAMMA) - 1)).requires_grad_(True)
    optimizer = torch.optim.Adam([v], lr=1e-2)
    warmup = int(0.2 * iterations)

    def quantized(h: torch.Tensor) -> torch.Tensor:
        return scale * torch.clamp(low + h, -QMAX, QMAX)

    def error(weight: torch.Tensor, sample: torch.Tensor) -> float:
        with torch.no_grad():
            return float((_apply(layer, sample, weight) - _apply(layer, sample, folded)).pow(2).mean())

    probe = x[:256]
    nearest = error(quantized((rest >= 0.5).float()), probe)
    for step in range(iterations):
        batch = x[torch.randint(len(x), (min(batch_size, len(x)),), generator=generator)]
        with torch.no_grad():
            target = _apply(layer, batch, folded)
        h = _rectified_sigmoid(v)
        loss = (_apply(layer, batch, quantized(h)) - target).pow(2).mean()
        if step >= warmup:
            beta = 20 - (20 - 2) * (step - warmup) / max(1, iterations - warmup)
            loss = loss + regularization * (1 - (2 * h - 1).abs().pow(beta)).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        up = (_rectified_sigmoid(v) >= 0.5).float()
        learned = error(quantized(up), probe)
        if learned > nearest:  # never worse than nearest rounding on the probe
            up = (rest >= 0.5).float()
        steps = torch.clamp(low + up, -QMAX, QMAX)
        # The weights that set the scale must stay at +-127 exactly (float division may leave
        # 126.99999 and a learned "down"), or the converter would derive another scale.
        ratio = folded / scale
        steps = torch.where(ratio.abs() >= QMAX - 1e-3, torch.sign(ratio) * QMAX, steps)
        layer.weight.copy_(steps * scale / safe)
        flipped = float((up != (rest >= 0.5).float()).float().mean())
    return {"error_nearest": nearest, "error_adaround": min(learned, nearest), "flipped": round(flipped, 4)}


def adaround(model: nn.Module, calibration: torch.Tensor, per_channel: bool, iterations: int = 500,
             regularization: float = 0.01, batch_size: int = 32, seed: int = 0) -> dict[str, Any]:
    """AdaRound every convolution and Linear of `model` in place (float inputs, layer by layer)."""
    model.eval()
    factors = fold_factors(model)
    modules = dict(model.named_modules())
    generator = torch.Generator().manual_seed(seed)
    layers: list[dict[str, Any]] = []
    started = time.perf_counter()
    for name, factor in factors.items():
        x = layer_inputs(model, modules[name], calibration)
        if not len(x):
            continue  # not on the forward path
        facts = round_layer(modules[name], factor, x, per_channel, iterations, regularization, batch_size, generator)
        layers.append({"layer": name, **{k: round(float(v), 8) for k, v in facts.items()}})
    gain = [float(lay["error_nearest"]) / float(lay["error_adaround"]) for lay in layers if float(lay["error_adaround"]) > 0]
    return {"layers": layers, "iterations": iterations, "seconds": round(time.perf_counter() - started, 2),
            "mean_error_ratio": round(sum(gain) / len(gain), 3) if gain else None}
