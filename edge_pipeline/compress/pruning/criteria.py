"""How much each prunable class (a channel and everything coupled to it) matters.

- `l1`, `l2` (Li et al., 2017): norm of every filter that produces the class. Each layer's norms are
  divided by that layer's mean, so layers of different fan-in compare in global allocation; a
  class produced by several layers (a residual stream) gets the mean.
- `bn_scale` (Network Slimming, Liu et al., 2017): |gamma| of the BatchNorm channels of the class
  (mean if several). Meaningful after training with an L1 penalty on gamma (`bn_l1` in train /
  finetune), which drives unneeded channels towards zero. Classes without BatchNorm are kept.
- `taylor` (Molchanov et al., 2019): first-order estimate of the loss change when the class is
  removed: (sum over its parameters of gradient x weight)^2, gradients from labelled calibration
  batches (producer filters and biases, BatchNorm gamma and beta), averaged over batches.
- `random`: a control.
Higher score = more important = kept.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from ..names import CRITERIA
from .problem import Problem


def _accumulate(n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.zeros(n), np.zeros(n)


def _add(total: np.ndarray, count: np.ndarray, index: np.ndarray, values: np.ndarray) -> None:
    keep = index >= 0
    np.add.at(total, index[keep], values[keep])
    np.add.at(count, index[keep], 1)


def _producers(problem: Problem, model: nn.Module):
    for u in problem.uses:
        if u.first and u.use.kind in ("conv", "linear"):
            yield u, model.get_submodule(u.use.path)


def _norms(problem: Problem, model: nn.Module):
    for u in problem.uses:
        if u.first and u.use.kind == "norm":
            module = model.get_submodule(u.use.path)
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.affine:
                yield u, module


@torch.no_grad()
def magnitude_scores(problem: Problem, model: nn.Module, p: int) -> np.ndarray:
    total, count = _accumulate(len(problem.classes))
    for u, module in _producers(problem, model):
        w = module.weight.detach().flatten(1).double()
        norms = w.abs().sum(1) if p == 1 else w.pow(2).sum(1).sqrt()
        mean = float(norms.mean())
        _add(total, count, u.outputs, (norms / mean if mean > 0 else norms).numpy())
    return np.divide(total, count, out=np.zeros_like(total), where=count > 0)


@torch.no_grad()
def bn_scale_scores(problem: Problem, model: nn.Module) -> np.ndarray:
    total, count = _accumulate(len(problem.classes))
    for u, module in _norms(problem, model):
        _add(total, count, u.inputs, module.weight.detach().abs().double().numpy())
    return np.where(count > 0, total / np.maximum(count, 1), np.inf)


def taylor_scores(problem: Problem, model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor,
                  batch_size: int = 64) -> np.ndarray:
    producers = list(_producers(problem, model))
    norms = list(_norms(problem, model))
    params = [p for _, m in producers + norms for p in (m.weight, m.bias) if p is not None]
    total = np.zeros(len(problem.classes))
    batches = 0
    was_training = model.training
    frozen = [p for p in params if not p.requires_grad]  # e.g. a model that served as a frozen teacher
    for p in frozen:
        p.requires_grad_(True)
    model.eval()  # running statistics stay as they are; gradients still flow to every parameter
    try:
        for start in range(0, len(inputs), batch_size):
            x, y = inputs[start : start + batch_size], labels[start : start + batch_size]
            loss = nn.functional.cross_entropy(model(x), y)
            grads = dict(zip(map(id, params), torch.autograd.grad(loss, params, allow_unused=True)))
            contribution = np.zeros(len(problem.classes))
            with torch.no_grad():
                for u, m in producers:
                    gw = _gw(m.weight, grads).flatten(1).sum(1)
                    if m.bias is not None:
                        gw = gw + _gw(m.bias, grads)
                    _add(contribution, np.zeros(len(problem.classes)), u.outputs, gw.double().numpy())
                for u, m in norms:
                    gw = _gw(m.weight, grads) + _gw(m.bias, grads)
                    _add(contribution, np.zeros(len(problem.classes)), u.inputs, gw.double().numpy())
            total += contribution**2
            batches += 1
    finally:
        model.train(was_training)
        for p in frozen:
            p.requires_grad_(False)
    return total / max(batches, 1)


def _gw(p: torch.Tensor, grads: Mapping[int, torch.Tensor | None]) -> torch.Tensor:
    # Mapping: the stubs type autograd.grad as all tensors, but with allow_unused=True an unused one is None.
    g = grads.get(id(p))
    return torch.zeros_like(p) if g is None else g * p.detach()


def random_scores(problem: Problem, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random(len(problem.classes))


def scores(criterion: str, problem: Problem, model: nn.Module, seed: int = 0,
           calibration: tuple[torch.Tensor, torch.Tensor] | None = None) -> np.ndarray:
    if criterion == "l1":
        return magnitude_scores(problem, model, 1)
    if criterion == "l2":
        return magnitude_scores(problem, model, 2)
    if criterion == "bn_scale":
        return bn_scale_scores(problem, model)
    if criterion == "taylor":
        if calibration is None:
            raise ValueError("the taylor criterion needs calibration inputs and labels")
        return taylor_scores(problem, model, *calibration)
    if criterion == "random":
        return random_scores(problem, seed)
    raise ValueError(f"unknown pruning criterion {criterion!r}; known: {', '.join(CRITERIA)}")


def bn_l1_penalty(strength: float):
    """Network Slimming's sparsity term: strength * sum |gamma| over every BatchNorm (a `fit` regularizer)."""

    def penalty(model: nn.Module) -> torch.Tensor:
        terms = [m.weight.abs().sum() for m in model.modules()
                 if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine]
        return strength * torch.stack(terms).sum() if terms else torch.zeros(())

    return penalty
