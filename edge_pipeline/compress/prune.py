"""Structured filter pruning, the original entry point: `prune_filters` keeps its signature and
now runs on the dependency analysis in `compress/pruning/` (any traceable CNN, channel shuffles
included). New code should call `compress.pruning.prune_channels` directly."""

from __future__ import annotations

import torch
from torch import nn

from .edits import Edit
from .pruning import CRITERIA, Target, prune_channels


def prune_filters(
    model: nn.Module,
    example_input: torch.Tensor,
    ratio: float,
    criterion: str = "l1",
    round_to: int | None = None,
    ignore: list[str] | None = None,
    seed: int = 0,
    calibration: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> Edit:
    """Remove `ratio` of the output channels of every prunable layer group, in place."""
    return prune_channels(model, example_input, Target("ratio", ratio), criterion, "per_layer", round_to,
                          ignore=ignore, seed=seed, calibration=calibration)


__all__ = ["CRITERIA", "prune_filters"]
