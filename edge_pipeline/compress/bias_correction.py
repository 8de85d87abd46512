"""Bias correction (Nagel et al. 2019, sec. 4.2): int8 rounding of the weights shifts the mean of
each output channel by E[(W - W_q) x]; adding that to the bias takes the shift back.

Empirical: E is taken over the calibration set with the float model's own inputs to each layer, in
one pass (weight error only: the activations' rounding is zero-mean to first order). Analytic
(data-free): where a layer's input comes from a BatchNorm (and a ReLU), that input is modelled as
N(beta, gamma^2) per channel (clipped at 0 by the ReLU), whose mean is known in closed form; layers
without a BatchNorm before them are left alone and reported (use empirical for those). W_q is the rounding the
converter will do (`int8sim.quantized_weight`: BatchNorm folded, per channel or per tensor). Where a
layer has no bias, the BatchNorm right after it takes the correction in its running mean; a layer
with neither is left alone and reported.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .equalize import bias_target, find_pairs, trace
from .int8sim import fold_factors, quantized_weight, weight_error_output


@torch.no_grad()
def correct_biases(model: nn.Module, inputs: torch.Tensor, per_channel: bool, batch_size: int = 64) -> dict[str, Any]:
    """Correct every weighted layer of `model` in place; what was corrected and what was not."""
    model.eval()
    factors = fold_factors(model)
    modules = dict(model.named_modules())
    errors = {name: modules[name].weight - quantized_weight(modules[name].weight, f, per_channel) for name, f in factors.items()}
    names = {modules[n]: n for n in factors}
    sums: dict[str, torch.Tensor] = {}
    count = 0

    def hook(module, args):
        name = names[module]
        shift = weight_error_output(module, args[0], errors[name]) * len(args[0])
        sums[name] = sums.get(name, 0) + shift

    handles = [m.register_forward_pre_hook(hook) for m in names]
    try:
        for start in range(0, len(inputs), batch_size):
            chunk = inputs[start : start + batch_size]
            model(chunk)
            count += len(chunk)
    finally:
        for h in handles:
            h.remove()
    graph = trace(model, "bias_correction")
    corrected, skipped = [], []
    for name, total in sums.items():
        shift = total / max(count, 1)
        target = bias_target(graph, modules, name)
        if target is None:
            skipped.append(name)
            continue
        target(shift)
        corrected.append({"layer": name, "max_shift": round(float(shift.abs().max()), 6)})
    return {"corrected": corrected, "skipped": skipped, "samples": count}


def expected_input(norm: Any, relu_like: bool) -> torch.Tensor:
    """E[x] per channel of BatchNorm output N(beta, gamma^2), after a ReLU if `relu_like`."""
    mean, std = norm.bias.detach(), norm.weight.detach().abs().clamp_min(1e-12)
    if not relu_like:
        return mean
    normal = torch.distributions.Normal(0.0, 1.0)
    z = mean / std
    return mean * normal.cdf(z) + std * normal.log_prob(z).exp()


@torch.no_grad()
def correct_biases_analytic(model: nn.Module, per_channel: bool) -> dict[str, Any]:
    """Data-free bias correction of every layer that follows a BatchNorm (see the module doc)."""
    model.eval()
    factors = fold_factors(model)
    modules = dict(model.named_modules())
    pairs, _ = find_pairs(model)
    graph = trace(model, "bias_correction")
    fed = {p.second: p for p in pairs if p.norm and (p.relu_like or p.activation == "identity")}
    corrected, skipped = [], []
    for name, factor in factors.items():
        layer, pair = modules[name], fed.get(name)
        target = bias_target(graph, modules, name)
        if pair is None or target is None:
            skipped.append(name)
            continue
        error = layer.weight - quantized_weight(layer.weight, factor, per_channel)
        means = expected_input(modules[pair.norm], pair.relu_like)
        # Each input channel's mean times the summed kernel weights it meets (zero padding ignored).
        x = means.view(1, -1, 1, 1).expand(1, -1, *layer.kernel_size) if isinstance(layer, nn.Conv2d) else means.view(1, -1)
        shift = _weight_error_on_constant(layer, x, error)
        target(shift)
        corrected.append({"layer": name, "max_shift": round(float(shift.abs().max()), 6)})
    return {"corrected": corrected, "skipped": skipped, "samples": 0}


def _weight_error_on_constant(layer: Any, x: torch.Tensor, error: torch.Tensor) -> torch.Tensor:
    if isinstance(layer, nn.Linear):
        return torch.nn.functional.linear(x, error)[0]
    return torch.nn.functional.conv2d(x, error, None, 1, 0, layer.dilation, layer.groups)[0, :, 0, 0]
