"""Small models with the structures channel pruning must follow, and the dead-channel oracle.

The oracle: prune a copy, then in the original zero every removed channel at its source (filters,
biases, BatchNorm scale and shift). If the dependency analysis is right, the removed channels
carry exact zeros everywhere they flow, so the zeroed original and the pruned copy compute the
same function.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from edge_pipeline.models.layers import ChannelShuffle


def cbr(cin: int, cout: int, k: int = 3, groups: int = 1, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]


class GroupedShuffleNet(nn.Module):
    """Grouped 1x1 convs each followed by a shuffle module (what grouped_pointwise produces)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.stem = nn.Sequential(*cbr(in_channels, 16))
        self.body = nn.Sequential(
            nn.Sequential(nn.Conv2d(16, 32, 1, groups=4, bias=False), ChannelShuffle(32, 4)), nn.BatchNorm2d(32), nn.ReLU(),
            *cbr(32, 32, 3, groups=32),
            nn.Sequential(nn.Conv2d(32, 32, 1, groups=4, bias=False), ChannelShuffle(32, 4)), nn.BatchNorm2d(32), nn.ReLU(),
            nn.Sequential(nn.Conv2d(32, 64, 1, groups=2, bias=False), ChannelShuffle(64, 2)), nn.BatchNorm2d(64), nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.body(self.stem(x))), 1))


class InlineShuffleUnit(nn.Module):
    """A ShuffleNetV2 unit written inline: chunk, branch, cat, view/transpose/view shuffle."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        half = channels // 2
        self.branch = nn.Sequential(*cbr(half, half, 1), nn.Conv2d(half, half, 3, 1, 1, groups=half, bias=False),
                                    nn.BatchNorm2d(half), *cbr(half, half, 1))

    def forward(self, x):
        a, b = x.chunk(2, dim=1)
        out = torch.cat((a, self.branch(b)), 1)
        n, c, h, w = out.size()
        return out.view(n, 2, c // 2, h, w).transpose(1, 2).contiguous().view(n, c, h, w)


class InlineShuffleNet(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.stem = nn.Sequential(*cbr(in_channels, 32))
        self.units = nn.Sequential(InlineShuffleUnit(32), InlineShuffleUnit(32))
        self.head = nn.Sequential(*cbr(32, 48, 1))
        self.fc = nn.Linear(48, num_classes)

    def forward(self, x):
        return self.fc(self.head(self.units(self.stem(x))).mean([2, 3]))


class SqueezeExciteNet(nn.Module):
    """A residual block with squeeze-and-excitation (a broadcast product) and a shared conv."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.stem = nn.Sequential(*cbr(in_channels, 24))
        self.conv = nn.Sequential(*cbr(24, 24))
        self.shared = nn.Conv2d(24, 24, 3, 1, 1, bias=True)  # called twice
        self.se = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(24, 8, 1), nn.ReLU(), nn.Conv2d(8, 24, 1), nn.Sigmoid())
        self.fc = nn.Linear(24, num_classes)

    def forward(self, x):
        x = self.stem(x)
        y = self.conv(x)
        y = y * self.se(y)
        y = torch.relu(self.shared(torch.relu(self.shared(y))))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x + y, 1), 1))


class HardcodedViewNet(nn.Module):
    """Flattens with a constant: pruning its conv would silently change the meaning of `view`."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 8, 3, 2, 1)
        self.fc = nn.Linear(8 * 4 * 4, num_classes)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).reshape(1, 8 * 4 * 4))


@torch.no_grad()
def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BatchNorm statistics and scales, so the oracle compares real numbers."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.bias.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
    return model.eval()


@torch.no_grad()
def zero_removed(model: nn.Module, summary: dict) -> nn.Module:
    """A copy of the unpruned `model` whose removed channels are exact zeros at their sources."""
    zeroed = copy.deepcopy(model)
    for path, layer in summary["layers"].items():
        module = zeroed.get_submodule(path)
        if layer["kind"] in ("conv", "linear"):
            gone = sorted(set(range(layer["out"][0])) - set(layer["kept_out"]))
            module.weight[gone] = 0
            if module.bias is not None:
                module.bias[gone] = 0
        elif layer["kind"] == "norm":
            gone = sorted(set(range(layer["in"][0])) - set(layer["kept"]))
            module.weight[gone] = 0
            module.bias[gone] = 0
    return zeroed
