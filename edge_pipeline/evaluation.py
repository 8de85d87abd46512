"""The facts reported for every model: params, MACs, bytes on disk and held-out accuracy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from .artifacts import WEIGHTS_FILE, TrackedModel


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


@torch.no_grad()
def predict(model: nn.Module, loader) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and labels over a loader, in eval mode."""
    was_training = model.training
    model.eval()
    logits, labels = [], []
    for x, y in loader:
        logits.append(model(x))
        labels.append(y)
    model.train(was_training)
    return torch.cat(logits), torch.cat(labels)


def accuracy(model: nn.Module, loader) -> float:
    logits, labels = predict(model, loader)
    return float((logits.argmax(1) == labels).float().mean())


def model_facts(model: TrackedModel, data, folder: Path) -> dict[str, Any]:
    module = model.module
    return {
        "params": count_params(module),
        "macs": count_macs(module, data.input_shape),
        "size_bytes": (Path(folder) / WEIGHTS_FILE).stat().st_size,
        "accuracy": round(accuracy(module, data.loader("test", batch_size=256)), 6),
        "val_accuracy": round(accuracy(module, data.loader("val", batch_size=256)), 6),
    }
