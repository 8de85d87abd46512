"""Our own layers, which saved structures refer to by name (see `modspec.buildable`).

They live with the model code, not with the transforms that insert them, so loading a saved
model needs only `models/`: the inverted residual block (MobileNetV2) that `depthwise_separable`
puts in place of a convolution, and the channel shuffle (ShuffleNet) after grouped 1x1 convs.
"""

from __future__ import annotations

import torch
from torch import nn

from .modspec import buildable

ACTIVATIONS = {"relu": nn.ReLU, "relu6": nn.ReLU6, "hardswish": nn.Hardswish, "none": None}


def make_activation(name: str) -> nn.Module:
    activation = ACTIVATIONS[name]
    if activation is None:
        return nn.Identity()
    return nn.Hardswish() if name == "hardswish" else activation(inplace=True)


def _pair(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


@buildable
class InvertedResidual(nn.Module):
    """A MobileNetV2 block standing in for one convolution (same input and output shapes)."""

    def __init__(self, in_channels: int, out_channels: int, hidden_channels: int, kernel_size, stride, padding,
                 dilation, activation: str = "relu", residual: bool = True, bias: bool = False) -> None:
        super().__init__()
        kernel_size, stride, dilation = _pair(kernel_size), _pair(stride), _pair(dilation)
        padding = padding if isinstance(padding, str) else _pair(padding)
        self._args = {
            "in_channels": in_channels, "out_channels": out_channels, "hidden_channels": hidden_channels,
            "kernel_size": list(kernel_size), "stride": list(stride),
            "padding": padding if isinstance(padding, str) else list(padding), "dilation": list(dilation),
            "activation": activation, "residual": residual, "bias": bias,
        }
        linear = activation == "none"
        self.expand = nn.Conv2d(in_channels, hidden_channels, 1, bias=False)
        self.bn1 = nn.Identity() if linear else nn.BatchNorm2d(hidden_channels)
        self.act1 = make_activation(activation)
        self.depthwise = nn.Conv2d(hidden_channels, hidden_channels, kernel_size, stride, padding, dilation,
                                   groups=hidden_channels, bias=False)
        self.bn2 = nn.Identity() if linear else nn.BatchNorm2d(hidden_channels)
        self.act2 = make_activation(activation)
        self.project = nn.Conv2d(hidden_channels, out_channels, 1, bias=bias)
        self.residual = residual

    def spec_args(self) -> dict:
        return dict(self._args)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.act2(self.bn2(self.depthwise(self.act1(self.bn1(self.expand(x)))))))
        return x + y if self.residual else y


def shuffle_permutation(channels: int, groups: int) -> torch.Tensor:
    """out[:, i] = in[:, perm[i]]: output position a*g + b takes channel b*(c/g) + a (ShuffleNet)."""
    return torch.arange(channels).view(groups, channels // groups).t().reshape(-1)


@buildable
class ChannelShuffle(nn.Module):
    perm: torch.Tensor  # a buffer (registered in __init__)

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        if channels % groups:
            raise ValueError(f"ChannelShuffle: groups {groups} must divide channels {channels}")
        self.channels, self.groups = channels, groups
        # Not persistent: derived from the two ints, so it is not a weight to save.
        self.register_buffer("perm", shuffle_permutation(channels, groups), persistent=False)

    def spec_args(self) -> dict:
        return {"channels": self.channels, "groups": self.groups}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.index_select(1, self.perm)
