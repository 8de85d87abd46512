"""The training loop shared by `train`, `finetune` and `prune` rounds: SGD/AdamW, cosine schedule,
progress bar, and data parallelism across processes when launched distributed (see distributed.py)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from . import distributed
from .errors import PipelineError
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


@torch.no_grad()
def _accuracy(model: nn.Module, loader, device) -> float:
    if device.type == "cpu":
        return accuracy(model, loader)
    model.eval()
    hits = total = 0
    for x, y in loader:
        hits += int((model(x.to(device)).argmax(1).cpu() == y).sum())
        total += len(y)
    return hits / max(total, 1)


def fit(model: nn.Module, data, cfg, seed: int, loss_fn: LossFn, label: str,
        extra_params: list[nn.Parameter] | None = None,
        regularizer: Callable[[nn.Module], torch.Tensor] | None = None,
        after_step: Callable[[nn.Module], None] | None = None) -> list[dict[str, float]]:
    """Train `model` in place for cfg.epochs; return per-epoch history (loss, train acc, val acc).

    `extra_params`: trained tensors outside the model (e.g. distillation adapters); `regularizer(model)`
    is added to the loss (e.g. an L1 penalty on BatchNorm scales); `after_step(model)` runs after
    every optimizer step (e.g. keeping pruned weights at zero).

    In a distributed run every rank iterates the same global batches (same seed, same augmentation)
    and computes its slice; averaged gradients make every rank take the single-process step.
    """

    rank, size = (torch.distributed.get_rank(), torch.distributed.get_world_size()) if distributed.active() else (0, 1)
    device = distributed.device()
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    loader = data.loader("train", shuffle=True, seed=seed, batch_size=cfg.batch_size or data.batch_size)
    val_loader = data.loader("val", batch_size=256)
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad] + list(extra_params or [])
    optimizer = make_optimizer(params, cfg)
    steps_per_epoch = len(loader)
    total = cfg.epochs * steps_per_epoch
    warmup = cfg.warmup_epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, total, warmup, cfg.schedule))
    history: list[dict[str, float]] = []
    with progress(f"{label}", total) as bar, distributed.SyncedTraining(model) as synced:
        for epoch in range(cfg.epochs):
            model.train()
            loss_sum = correct = seen = 0.0
            for x, y in loader:
                if data.augment is not None:
                    x = data.augment(x, gen)
                global_n = len(y)
                weight, share = 1.0, 1.0  # gradient weight; this rank's share of the batch statistics
                if size > 1:
                    x, y, offset = distributed.shard(x, y, rank, size)
                    synced.batch(global_n, offset)
                    if len(y) < global_n:
                        # Mean over ranks of each rank's gradient = gradient of the mean loss over the
                        # global batch: weigh each slice by its share (slices may differ by one).
                        weight = len(y) * size / global_n
                    else:  # a batch smaller than the world: every rank computed all of it
                        share = 1.0 / size
                x, y = x.to(device), y.to(device)
                optimizer.zero_grad(set_to_none=True)
                loss, logits = loss_fn(model, x, y)
                scaled = loss * weight
                if regularizer is not None:
                    scaled = scaled + regularizer(model)
                if not torch.isfinite(scaled):

                    raise PipelineError(f"{label}: loss became {scaled.item()} in epoch {epoch + 1}; lower `lr` (now {cfg.lr})")
                scaled.backward()
                distributed.average_gradients(params)
                optimizer.step()
                scheduler.step()
                if after_step is not None:
                    after_step(model)
                loss_sum += loss.item() * len(y) * share
                correct += float((logits.argmax(1) == y).sum()) * share
                seen += len(y) * share
                bar.advance()
            distributed.average_buffers(model)
            loss_sum, correct, seen = distributed.all_reduce_sum([loss_sum, correct, seen])
            val = _accuracy(model, val_loader, device) if rank == 0 else float("nan")
            history.append({"epoch": epoch + 1, "loss": round(loss_sum / seen, 5), "train_accuracy": round(correct / seen, 5),
                            "val_accuracy": round(val, 5)})
            bar.note(f"epoch {epoch + 1}/{cfg.epochs} loss {loss_sum / seen:.3f} val {val:.3f}")
    model.eval()
    model.to("cpu")
    if history:
        last = history[-1]
        console.print(f"  {label}: {cfg.epochs} epochs, loss {last['loss']:.3f}, val accuracy {last['val_accuracy']:.3f}")
    return history
