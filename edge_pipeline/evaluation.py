"""The facts reported for every model: params, MACs, bytes on disk and held-out accuracy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from .models.counting import count_macs, count_params
from .models.store import WEIGHTS_FILE, TrackedModel


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
