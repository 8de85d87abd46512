"""Structured channel pruning on any traceable CNN, and unstructured magnitude pruning.

- `graph`: channel-dependency analysis (which channels must go together), incl. channel shuffles;
- `problem`: prunable classes, layer groups, exact MACs/params of a decision;
- `criteria`: l1, l2, bn_scale, taylor, random importance;
- `allocate`: ratio / MACs / params targets, per-layer or global;
- `apply`: slicing, the replayable Edit, exactness and replay checks;
- `unstructured`: magnitude sparsity (weights zeroed, shapes unchanged).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ...errors import PipelineError
from ...models.edits import Edit
from ..names import ALLOCATIONS, CRITERIA
from .allocate import Target, allocate
from .apply import apply_resizes, kept_summary, plan_resizes, snapshot, verify_exact, verify_replay
from .criteria import bn_l1_penalty, scores
from .graph import ChannelGraph, UntraceableModel
from .problem import LatencyFn, build_problem
from .unstructured import magnitude_prune


def prune_channels(
    model: nn.Module,
    example: torch.Tensor,
    target: Target,
    criterion: str = "l1",
    allocation: str = "per_layer",
    round_to: int | None = None,
    max_ratio: float = 0.9,
    ignore: list[str] | None = None,
    seed: int = 0,
    calibration: tuple[torch.Tensor, torch.Tensor] | None = None,
    min_channels: dict[str, int] | None = None,
    latency: tuple[LatencyFn, float] | None = None,
) -> Edit:
    """Remove channels from `model` in place until `target` is met; return the replayable Edit.

    The logits (everything that reaches the model output) and modules under `ignore` keep their
    channels. `calibration` = (inputs, labels) is needed by the taylor criterion. `min_channels`
    (layer path -> output channels) puts absolute floors under `max_ratio`, e.g. over several rounds.
    `latency` = (layer path, kept inputs, kept outputs -> ms; ms of all other ops) prices decisions in
    predicted milliseconds; a `latency` target (in ms) needs it.
    """
    example = example[:1]
    try:
        graph = ChannelGraph(model, example, ignore)
    except UntraceableModel as exc:
        raise PipelineError(f"prune: torch.fx cannot trace the model ({exc}); structured pruning needs a forward "
                            "without value-dependent control flow (magnitude pruning does not)") from None
    problem = build_problem(graph, model, round_to, max_ratio, min_channels)
    if latency is not None:
        problem.set_latency(*latency)
    elif target.kind == "latency":
        raise ValueError("a latency target needs the latency model (`latency=`)")
    importance = scores(criterion, problem, model, seed, calibration)
    removed = allocate(problem, importance, target, allocation)
    before, after = problem.cost(np.zeros_like(removed)), problem.cost(removed)
    resizes = plan_resizes(problem, removed)
    unpruned = snapshot(model)
    edit = Edit("prune", {
        "criterion": criterion, "target": {"kind": target.kind, "value": target.value}, "allocation": allocation,
        "round_to": round_to, "max_ratio": max_ratio, "ignore": list(ignore or []),
    })
    apply_resizes(model, resizes, edit)
    verify_exact(graph, problem, removed, model, example)
    verify_replay(unpruned, model, edit, example)
    edit.summary = {
        "criterion": criterion, "allocation": allocation, "target": {"kind": target.kind, "value": target.value},
        "macs": [before["macs"], after["macs"]], "params": [before["params"], after["params"]],
        "channels": [before["channels"], after["channels"]],
        **({"latency_ms": [round(before["latency"], 5), round(after["latency"], 5)]} if latency is not None else {}),
        "classes": {"prunable": len(problem.classes), "removed": int(removed.sum()), "groups": len(problem.groups)},
        "resized_modules": len(resizes),
        "unprunable_because": sorted(set(graph.fixed_reasons))[:20],
        **kept_summary(problem, removed, resizes),
    }
    return edit


__all__ = ["ALLOCATIONS", "CRITERIA", "ChannelGraph", "Target", "bn_l1_penalty", "magnitude_prune", "prune_channels"]
