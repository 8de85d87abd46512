"""After `train` / `finetune`: notice BatchNorm running statistics that did not converge, and
re-estimate them (see `stages/train.py` for the option `refresh_bn`).

The check compares, on one validation batch, the model in eval mode (running statistics) with the
same model normalizing by the batch's own statistics (every BatchNorm in train mode, nothing else:
dropout stays off, no running average is updated). Same weights, same images: a gap can only come
from the running statistics. (The train-mode accuracy of the last epoch would mix in augmentation
and weights that changed during the epoch, so it cannot tell stale statistics from overfitting.)
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from torch import nn

from ... import distributed
from ...compress.batchnorm import refresh_statistics
from ...data import calibration_batch
from ...evaluation import accuracy
from ...ui import console, status_line

STALE_GAP = 0.05  # eval mode more than 5 points below batch statistics on the same batch: stale (stated in train.py)
CHECK_SAMPLES = 256  # validation images in the check batch (one batch: its statistics are the normalizer)
REFRESH_SAMPLES = 512  # train images (stratified, no augmentation) the statistics are re-estimated on


def batchnorm_check(module: nn.Module, data, setting: bool | str, epochs: int, label: str, seed: int) -> dict[str, Any] | None:
    """Check (and maybe refresh) `module`'s BatchNorm statistics in place; the record for the stage
    details, or None when nothing was checked. `setting`: the stage's `refresh_bn`."""
    if setting is False or not distributed.is_leader() or not _batchnorms(module):
        return None
    if setting == "auto" and epochs == 0:  # nothing was trained: the incoming statistics stay
        return None
    started = time.perf_counter()
    batch = _check_batch(data)
    if batch is None:
        return None
    x, y = batch
    eval_accuracy, batch_accuracy = _top1(module, x, y), _top1_with_batch_statistics(module, x, y)
    record: dict[str, Any] = {
        "refresh_bn": setting, "check_samples": len(y), "eval_accuracy": round(eval_accuracy, 6),
        "batch_statistics_accuracy": round(batch_accuracy, 6), "stale": batch_accuracy - eval_accuracy > STALE_GAP,
        "refreshed": False,
    }
    if not record["stale"] and setting == "auto":
        return {**record, "seconds": round(time.perf_counter() - started, 3)}
    record.update(_refresh(module, data, keep_equal=setting is True, seed=seed))
    record["seconds"] = round(time.perf_counter() - started, 3)
    _say(label, record)
    return record


def _batchnorms(module: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


def _check_batch(data) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The first validation images, as one batch (None when the split has fewer than two)."""
    batches = list(data.batches("val", limit=CHECK_SAMPLES, batch_size=CHECK_SAMPLES))
    if sum(len(y) for _, y in batches) < 2:
        return None
    return torch.from_numpy(np.concatenate([x for x, _ in batches])), torch.from_numpy(np.concatenate([y for _, y in batches]))


@torch.no_grad()
def _top1(module: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((module(x).argmax(1) == y).float().mean())


@torch.no_grad()
def _top1_with_batch_statistics(module: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Accuracy with every BatchNorm normalizing by this batch's statistics; the model is left as it was."""
    norms = _batchnorms(module)
    saved = [{name: b.clone() for name, b in m.named_buffers(recurse=False)} for m in norms]
    was_training = module.training
    module.eval()
    for m in norms:
        m.train()
    try:
        return _top1(module, x, y)
    finally:
        for m, buffers in zip(norms, saved):
            for name, value in buffers.items():
                getattr(m, name).copy_(value)
        module.train(was_training)


def _refresh(module: nn.Module, data, keep_equal: bool, seed: int) -> dict[str, Any]:
    """Re-estimate every BatchNorm's statistics on train images; keep them if validation accuracy
    improves (or stays equal, when the recipe asked for the refresh), else restore the model exactly."""
    val = data.loader("val", batch_size=256)
    before = accuracy(module, val)
    snapshot = {k: v.clone() for k, v in module.state_dict().items()}
    inputs = calibration_batch(data, min(REFRESH_SAMPLES, len(data.train)), seed)
    with status_line(f"re-estimating BatchNorm statistics on {len(inputs)} train images"):
        refresh_statistics(module, [module], [], inputs)  # the root module: every BatchNorm in the model
    after = accuracy(module, val)
    kept = after > before or (keep_equal and after >= before)
    if not kept:
        module.load_state_dict(snapshot)
    return {"refreshed": True, "kept": kept, "refresh_samples": len(inputs),
            "val_accuracy_before": round(before, 6), "val_accuracy_after": round(after, 6)}


def _say(label: str, record: dict[str, Any]) -> None:
    why = (f"eval mode {record['eval_accuracy']:.1%} vs {record['batch_statistics_accuracy']:.1%} with batch statistics "
           f"on {record['check_samples']} validation images")
    outcome = "kept" if record["kept"] else "not kept, the trained statistics stay"
    console.print(f"  {label}: BatchNorm statistics re-estimated ({why}): val accuracy "
                  f"{record['val_accuracy_before']:.2%} -> {record['val_accuracy_after']:.2%}, {outcome}")
