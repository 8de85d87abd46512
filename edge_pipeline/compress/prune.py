"""Structured filter pruning: whole output channels are removed (tensors really shrink).

Dependencies (residual adds, concatenations, depthwise convs, flatten into a Linear) are resolved by
torch-pruning's dependency graph, so every layer coupled to a pruned channel loses it too. The
kept channel indices of each pruned group and the new spec of every resized module are recorded
in the Edit, so a saved pruned model reloads exactly.
"""

from __future__ import annotations

import torch
from torch import nn

from .edits import Edit
from .modspec import module_spec, shapes_of
from .select import classifier

CRITERIA = ("l1", "l2", "random")


def _importance(criterion: str):
    import torch_pruning as tp

    if criterion == "l1":
        return tp.importance.GroupMagnitudeImportance(p=1)
    if criterion == "l2":
        return tp.importance.GroupMagnitudeImportance(p=2)
    if criterion == "random":
        return tp.importance.RandomImportance()
    raise ValueError(f"unknown pruning criterion {criterion!r}; known: {', '.join(CRITERIA)}")


def prune_filters(
    model: nn.Module,
    example_input: torch.Tensor,
    ratio: float,
    criterion: str = "l1",
    round_to: int | None = None,
    ignore: list[str] | None = None,
    seed: int = 0,
) -> Edit:
    """Remove `ratio` of the output channels of every prunable layer group, in place.

    The logits layer (and any module named in `ignore`) keeps its output channels.
    """
    import torch_pruning as tp

    torch.manual_seed(seed)  # the random criterion is reproducible
    names = {m: n for n, m in model.named_modules()}
    keep_out = [model.get_submodule(n) for n in [classifier(model), *(ignore or [])] if n]
    # Grouped (not depthwise) convs stay whole: torch-pruning cannot keep their groups and the channel
    # shuffle after them consistent (index out of range at the shuffle's gather).
    keep_out += [m for m in model.modules() if isinstance(m, nn.Conv2d) and 1 < m.groups < m.in_channels]
    before = shapes_of(model)
    channels_before = {n: _out_channels(m) for n, m in model.named_modules() if _out_channels(m) is not None}
    was_training = model.training
    model.eval()
    pruner = tp.pruner.BasePruner(
        model, example_input, importance=_importance(criterion), pruning_ratio=ratio,
        ignored_layers=keep_out, round_to=round_to,
    )
    groups = []
    for group in pruner.step(interactive=True):
        root = group[0].dep.target.module
        pruned = sorted(int(i) for i in group[0].idxs)
        name = names.get(root, "?")
        total = channels_before.get(name)
        kept = [i for i in range(total) if i not in set(pruned)] if total is not None else []
        groups.append({"root": name, "channels_before": total, "kept": kept,
                       "coupled": sorted({names.get(item.dep.target.module, "?") for item in group})})
        group.prune()
    model.train(was_training)
    edit = Edit("prune", {"criterion": criterion, "ratio": ratio, "round_to": round_to})
    after = shapes_of(model)
    for name, shapes in after.items():
        if before.get(name) != shapes:
            edit.ops.append({"op": "replace", "path": name, "module": module_spec(model.get_submodule(name))})
    edit.summary = {"groups": groups, "resized_modules": len(edit.ops)}
    return edit


def _out_channels(module: nn.Module) -> int | None:
    if isinstance(module, nn.Conv2d):
        return module.out_channels
    if isinstance(module, nn.Linear):
        return module.out_features
    return None
