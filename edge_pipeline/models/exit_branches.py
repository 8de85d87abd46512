"""Early-exit branches as layers that saved structures name (see `modspec.buildable`).

`EarlyExits` is attached to a model as a child the model's own `forward` never calls: the model
still returns its final logits (evaluation, quantization and the plain export see the same network),
while the branches travel with it through save and reload (an `attach` edit, weights in the same
safetensors file). `cuts` names the torch.fx nodes whose outputs feed the branches, in order; the
chain itself is cut and run by `convert.segments` / `compress.early_exit`.
"""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import nn

from .modspec import buildable

# Where the branches live on the model (a child module name the zoo and torchvision never use).
EXITS_ATTRIBUTE = "early_exits"


@buildable
class ExitBranch(nn.Module):
    """Optional 1x1 conv + BN + ReLU, then average pooling to `pool_size` x `pool_size` (1: global)
    and a Linear classifier over the pooled map."""

    def __init__(self, in_channels: int, num_classes: int, conv_channels: int = 0, pool_size: int = 1) -> None:
        super().__init__()
        self.in_channels, self.num_classes, self.conv_channels = in_channels, num_classes, conv_channels
        self.pool_size = pool_size
        width = conv_channels or in_channels
        self.body: nn.Module = nn.Identity()
        if conv_channels:
            self.body = nn.Sequential(nn.Conv2d(in_channels, conv_channels, 1, bias=False), nn.BatchNorm2d(conv_channels),
                                      nn.ReLU(inplace=True))
        self.pool = nn.AdaptiveAvgPool2d(pool_size)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(width * pool_size * pool_size, num_classes)

    def spec_args(self) -> dict[str, Any]:
        return {"in_channels": self.in_channels, "num_classes": self.num_classes, "conv_channels": self.conv_channels,
                "pool_size": self.pool_size}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(self.pool(self.body(x))))


@buildable
class EarlyExits(nn.Module):
    """The exit branches of a model and the graph nodes (cut points) they read, in forward order."""

    def __init__(self, cuts: list[str], branches: list[dict[str, Any]]) -> None:
        super().__init__()
        if len(cuts) != len(branches):
            raise ValueError(f"EarlyExits: {len(cuts)} cut points for {len(branches)} branches")
        self.cuts = [str(c) for c in cuts]
        self.branches = nn.ModuleList(ExitBranch(**b) for b in branches)

    def spec_args(self) -> dict[str, Any]:
        return {"cuts": list(self.cuts), "branches": [cast(ExitBranch, b).spec_args() for b in self.branches]}

    def forward(self, *_: Any) -> torch.Tensor:
        raise RuntimeError("EarlyExits is not called by the model's forward; run the chain with compress.early_exit")


def exits_of(module: nn.Module) -> EarlyExits | None:
    """The model's exit branches, if it has any."""
    exits = getattr(module, EXITS_ATTRIBUTE, None)
    return exits if isinstance(exits, EarlyExits) else None
