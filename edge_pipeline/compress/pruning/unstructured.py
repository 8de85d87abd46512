"""Unstructured magnitude pruning: the smallest weights become exact zeros, shapes stay the same.

Honest about what it buys: dense kernels (every TFLite CONV_2D / FULLY_CONNECTED kernel unless
the model is converted with sparsity support) do exactly the same work on zeros, so latency does
not change; the zeros compress well, and TFLite's experimental sparse format can store them
(see benchmarks/prune_distill.py for what it does to size and latency here).

The Edit has no structural ops (nothing to replay: the zeros are in the weights); its summary
lists the pruned layers, so fine-tuning can keep those zeros (`sparsity_masks`, `keep_zeros`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ...models.edits import Edit
from ..select import classifier

SCOPES = ("global", "per_layer")


def _prunable(model: nn.Module, ignore: list[str], keep_logits: bool) -> list[tuple[str, nn.Conv2d | nn.Linear]]:
    logits = classifier(model) if keep_logits else None
    out: list[tuple[str, nn.Conv2d | nn.Linear]] = []
    for name, m in model.named_modules():
        if not isinstance(m, (nn.Conv2d, nn.Linear)) or name == logits:
            continue
        if any(name == p or name.startswith(p + ".") for p in ignore):
            continue
        out.append((name, m))
    return out


@torch.no_grad()
def magnitude_prune(model: nn.Module, sparsity: float, scope: str = "global", ignore: list[str] | None = None,
                    keep_logits: bool = True) -> Edit:
    """Zero the `sparsity` fraction of smallest-|w| weights (over all layers, or in each layer)."""
    layers = _prunable(model, list(ignore or []), keep_logits)
    if not layers:
        raise ValueError("no Conv2d or Linear layer to prune")
    if scope == "global":
        magnitudes = torch.cat([m.weight.detach().abs().flatten() for _, m in layers])
        k = int(sparsity * magnitudes.numel())
        threshold = torch.kthvalue(magnitudes, k).values if k > 0 else None
        for _, m in layers:
            if threshold is not None:
                m.weight[m.weight.abs() <= threshold] = 0.0
    elif scope == "per_layer":
        for _, m in layers:
            w = m.weight
            k = int(sparsity * w.numel())
            if k > 0:
                idx = torch.topk(w.abs().flatten(), k, largest=False).indices
                w.view(-1)[idx] = 0.0
    else:
        raise ValueError(f"unknown scope {scope!r}; known: {', '.join(SCOPES)}")
    per_layer = {name: round(float((m.weight == 0).float().mean()), 6) for name, m in layers}
    zeros = sum(int((m.weight == 0).sum()) for _, m in layers)
    total = sum(m.weight.numel() for _, m in layers)
    edit = Edit("magnitude", {"sparsity": sparsity, "scope": scope, "ignore": list(ignore or [])})
    edit.summary = {"layers": per_layer, "sparsity": round(zeros / total, 6), "zeros": zeros, "weights": total}
    return edit


def sparsity_masks(model: nn.Module, layers: list[str]) -> dict[str, torch.Tensor]:
    """Where each listed layer's weight is nonzero now (the pattern to keep while fine-tuning)."""
    return {name: _weight(model, name).detach() != 0 for name in layers}


def _weight(model: nn.Module, name: str) -> torch.Tensor:
    weight = model.get_submodule(name).weight
    assert isinstance(weight, torch.Tensor), f"{name} has no weight tensor"
    return weight


def keep_zeros(masks: dict[str, torch.Tensor]) -> Callable[[nn.Module], None]:
    """An after-step hook for `training.fit`: pruned weights stay exactly zero."""

    @torch.no_grad()
    def apply(model: nn.Module) -> None:
        for name, mask in masks.items():
            _weight(model, name).mul_(mask)

    return apply


def masks_from_edits(model: nn.Module, edits: list[Edit]) -> dict[str, torch.Tensor]:
    """Masks for every layer a `magnitude` edit pruned that still exists with the same shape."""
    layers = []
    for edit in edits:
        if edit.transform == "magnitude":
            layers += list(edit.summary.get("layers", {}))
    names = dict(model.named_modules())
    return sparsity_masks(model, [n for n in dict.fromkeys(layers) if n in names and hasattr(names[n], "weight")])
