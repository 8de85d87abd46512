"""Counting what a model costs: unique parameters and multiply-accumulates of one forward pass."""

from __future__ import annotations

import torch
from torch import nn


def count_params(model: nn.Module) -> int:
    """Unique parameters (shared tensors counted once)."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


def count_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of one forward pass of batch 1 (convolutions and linear layers)."""
    total = 0

    def conv_hook(m: nn.Conv2d, _inp, out: torch.Tensor) -> None:
        nonlocal total
        kh, kw = m.kernel_size
        total += out.numel() // out.shape[0] * (m.in_channels // m.groups) * kh * kw

    def linear_hook(m: nn.Linear, _inp, out: torch.Tensor) -> None:
        nonlocal total
        total += out.numel() // out.shape[0] * m.in_features

    handles = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(input_shape))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return int(total)
