"""The training loop shared by `train` and `finetune`: SGD/AdamW, cosine schedule, progress bar."""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from .evaluation import accuracy
from .ui import console, progress

# (model, inputs, labels) -> (loss, logits)
LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def cross_entropy(label_smoothing: float = 0.0) -> LossFn:
    ce = nn.CrossEntropyLoss(label_smoothing=label_smoothing)

    def loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = model(x)
        return ce(logits, y), logits

    return loss


def make_optimizer(params, cfg) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=cfg.momentum > 0)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    if warmup and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress_ = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress_)))


def fit(model: nn.Module, data, cfg, seed: int, loss_fn: LossFn, label: str,
        extra_params: list[nn.Parameter] | None = None,
        regularizer: Callable[[nn.Module], torch.Tensor] | None = None) -> list[dict[str, float]]:
    """Train `model` in place for cfg.epochs; return per-epoch history (loss, train acc, val acc)."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    loader = data.loader("train", shuffle=True, seed=seed, batch_size=cfg.batch_size or data.batch_size)
    val_loader = data.loader("val", batch_size=256)
    params = [p for p in model.parameters() if p.requires_grad] + list(extra_params or [])
    optimizer = make_optimizer(params, cfg)
    steps_per_epoch = len(loader)
    total = cfg.epochs * steps_per_epoch
    warmup = cfg.warmup_epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, total, warmup, cfg.schedule))
    history: list[dict[str, float]] = []
    with progress(f"{label}", total) as bar:
        for epoch in range(cfg.epochs):
            model.train()
            loss_sum = correct = seen = 0.0
            for x, y in loader:
                if data.augment is not None:
                    x = data.augment(x, gen)
                loss, logits = loss_fn(model, x, y)
                if regularizer is not None:
                    loss = loss + regularizer(model)
                if not torch.isfinite(loss):
                    from .errors import PipelineError

                    raise PipelineError(f"{label}: loss became {loss.item()} in epoch {epoch + 1}; lower `lr` (now {cfg.lr})")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                loss_sum += loss.item() * len(y)
                correct += float((logits.argmax(1) == y).sum())
                seen += len(y)
                bar.advance()
            val = accuracy(model, val_loader)
            history.append({"epoch": epoch + 1, "loss": round(loss_sum / seen, 5), "train_accuracy": round(correct / seen, 5), "val_accuracy": round(val, 5)})
            bar.note(f"epoch {epoch + 1}/{cfg.epochs} loss {loss_sum / seen:.3f} val {val:.3f}")
    model.eval()
    if history:
        last = history[-1]
        console.print(f"  {label}: {cfg.epochs} epochs, loss {last['loss']:.3f}, val accuracy {last['val_accuracy']:.3f}")
    return history
