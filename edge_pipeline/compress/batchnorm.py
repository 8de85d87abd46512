"""BatchNorm for restructured models: inserted layers that start as the identity, and re-estimation.

Identity start.
A transform that puts BN + activation between two new layers (MobileNet's depthwise and pointwise
parts, Inception's stacked convs) changes the function through that BN unless it starts as the
identity. PyTorch's default BN (running mean 0, var 1, weight 1, bias 0) is the identity only in eval
mode; in train mode it normalizes by batch statistics, so the first fine-tuning steps would train a
different network from the one initialized from the old weights. With running statistics measured
on calibration data and weight = sqrt(var + eps), bias = mean, BN is exactly the identity in eval
mode and approximately so in train mode (batch statistics ~ calibration statistics).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .probe import feed_to


def _running_stats(bn: nn.modules.batchnorm._BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """The running mean and variance of a BN that tracks them (every BN this module edits does)."""
    assert bn.running_mean is not None and bn.running_var is not None
    return bn.running_mean, bn.running_var


@torch.no_grad()
def exact_identity(bn: nn.BatchNorm2d) -> None:
    """Eval-mode identity without data: (x - 0) / sqrt((1 - eps) + eps) * 1 + 0 = x."""
    running_mean, running_var = _running_stats(bn)
    running_mean.zero_()
    running_var.fill_(1.0 - bn.eps)
    bn.weight.fill_(1.0)
    bn.bias.zero_()


@torch.no_grad()
def calibrate_identity(model: nn.Module, bns: list[nn.BatchNorm2d], inputs: torch.Tensor | None, batch_size: int = 64) -> None:
    """Make every BN in `bns` the identity at the statistics of its input on `inputs`."""
    if not bns:
        return
    for bn in bns:
        exact_identity(bn)
    if inputs is None or len(inputs) == 0:
        return
    sums: dict[int, list[Any]] = {}  # id(bn) -> [sum, sum of squares, count]

    def hook(module, args, _out):
        x = args[0].detach()
        dims = [d for d in range(x.dim()) if d != 1]
        zeros = torch.zeros(x.shape[1], dtype=torch.float64)
        acc = sums.setdefault(id(module), [zeros, zeros.clone(), 0])
        acc[0] = acc[0] + x.sum(dims).double()
        acc[1] = acc[1] + x.pow(2).sum(dims).double()
        acc[2] += x.numel() // x.shape[1]

    handles = [bn.register_forward_hook(hook) for bn in bns]
    was_training = model.training
    model.eval()  # every BN in `bns` is an exact identity now, so one pass sees the designed function
    try:
        for start in range(0, len(inputs), batch_size):
            model(inputs[start : start + batch_size])
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    for bn in bns:
        if id(bn) not in sums:  # not reached by the forward pass: keep the exact identity
            continue
        total, squares, count = sums[id(bn)]
        mean = total / count
        var = (squares / count - mean.pow(2)).clamp_min(0.0)
        running_mean, running_var = _running_stats(bn)
        running_mean.copy_(mean)
        running_var.copy_(var)
        bn.weight.copy_((var + bn.eps).sqrt())
        bn.bias.copy_(mean)


def call_order(model: nn.Module, example: torch.Tensor) -> tuple[list[nn.Module], dict[int, int]]:
    """Modules in the order their forward first starts, and how often each is called."""
    order: list[nn.Module] = []
    calls: dict[int, int] = {}

    def pre(module, _args):
        if id(module) not in calls:
            order.append(module)
        calls[id(module)] = calls.get(id(module), 0) + 1

    handles = [m.register_forward_pre_hook(pre) for m in model.modules()]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return order, calls


@torch.no_grad()
def input_statistics(model: nn.Module, bn: nn.Module, inputs: torch.Tensor, stop_early: bool,
                     batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Per-channel mean and (biased) variance of what `bn` receives over `inputs`, in eval mode."""
    acc: list = []

    def accumulate(x: torch.Tensor) -> None:
        dims = [d for d in range(x.dim()) if d != 1]
        if not acc:
            acc.extend([torch.zeros(x.shape[1], dtype=torch.float64), torch.zeros(x.shape[1], dtype=torch.float64), 0])
        acc[0] += x.sum(dims).double()
        acc[1] += x.pow(2).sum(dims).double()
        acc[2] += x.numel() // x.shape[1]

    feed_to(model, bn, inputs, accumulate, stop_early, batch_size)
    if not acc:
        return None
    mean = acc[0] / acc[2]
    return mean, (acc[1] / acc[2] - mean.pow(2)).clamp_min(0.0)


@torch.no_grad()
def refresh_statistics(model: nn.Module, changed: Sequence[nn.Module], identity: Sequence[nn.Module],
                       inputs: torch.Tensor | None) -> int:
    """Re-estimate the BatchNorm statistics a lossy replacement made stale, in execution order.

    A replacement that is not exact shifts the mean and scale of what flows into every BN after it,
    and those BNs then normalize with stale statistics: small per-layer errors can add up to a
    collapsed network. Re-estimating the statistics on calibration data (AdaBN, Li et al. 2016)
    fixes that without touching a weight. BNs are refreshed one at a time in the order they run, in
    eval mode, each seeing the already refreshed layers before it (so the result is exactly what
    the saved model computes). BNs in `identity` (inserted by a transform) are re-made the identity
    at their new input statistics; the others keep their weights and get new running statistics.
    BNs that run before the first changed module are left alone. Returns how many were refreshed.
    """
    if not changed or inputs is None or len(inputs) == 0:
        return 0
    order, calls = call_order(model, inputs[:1])
    position = {id(m): i for i, m in enumerate(order)}
    starts = [position[id(c)] for c in changed if id(c) in position]
    if not starts:
        return 0
    identity_ids = {id(b) for b in identity}
    targets = [m for m in order[min(starts):] if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    was_training = model.training
    model.eval()
    try:
        for bn in targets:
            stats = input_statistics(model, bn, inputs, stop_early=calls[id(bn)] == 1)
            if stats is None:
                continue
            mean, var = stats
            running_mean, running_var = _running_stats(bn)
            running_mean.copy_(mean)
            running_var.copy_(var)
            if id(bn) in identity_ids and bn.affine:
                bn.weight.copy_((var + bn.eps).sqrt())
                bn.bias.copy_(mean)
    finally:
        model.train(was_training)
    return len(targets)
