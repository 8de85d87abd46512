"""ShuffleNet-style grouped pointwise convolutions with a channel shuffle.

A dense 1x1 conv (cin -> cout) becomes a grouped 1x1 conv with g groups (g times fewer weights and
MACs) followed by a channel shuffle, so the next grouped layer mixes information across groups.

Groups must divide both channel counts, and the output shape must stay the same, so instead of
changing channel counts the group count is rounded per layer: the largest g' <= `groups` that
divides gcd(cin, cout) (a layer where that is 1 is skipped and listed with the reason).

The shuffle is a fixed permutation written as a gather on the channel axis. Measured through
onnx2tf 1.29: the textbook reshape(g, c/g) -> transpose -> reshape form becomes 2 RESHAPE and
3 TRANSPOSE ops in TFLite, the gather becomes one GATHER and no TRANSPOSE (float32 and int8).

Initialization `fit`: the grouped conv followed by the shuffle computes P * B x with B
block-diagonal and P the shuffle's permutation, so the closest such layer to the original W in
Frobenius norm is B = the block-diagonal part of P^T W (the original rows un-shuffled, the
weights between groups dropped). `random` keeps PyTorch's default init.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ..models.edits import Edit
from ..models.layers import ChannelShuffle
from .select import Selection, channels_ok, selected


def is_pointwise(module: nn.Module) -> bool:
    return isinstance(module, nn.Conv2d) and module.groups == 1 and tuple(module.kernel_size) == (1, 1)


def effective_groups(cin: int, cout: int, groups: int) -> int:
    common = math.gcd(cin, cout)
    return max(d for d in range(1, min(groups, common) + 1) if common % d == 0)


def grouped_from(conv: nn.Conv2d, groups: int, init: str) -> nn.Sequential:
    cin, cout = conv.in_channels, conv.out_channels
    # The stubs type a conv's stride/padding/dilation as tuple[int, ...]; a Conv2d's are pairs.
    grouped = nn.Conv2d(cin, cout, 1, conv.stride, conv.padding, conv.dilation,  # type: ignore[arg-type]
                        groups=groups, bias=conv.bias is not None)
    shuffle = ChannelShuffle(cout, groups)
    if init == "fit":
        _init_block_diagonal(conv, grouped, shuffle.perm)
    return nn.Sequential(grouped, shuffle)


@torch.no_grad()
def _init_block_diagonal(conv: nn.Conv2d, grouped: nn.Conv2d, perm: torch.Tensor) -> None:
    cout, cin = conv.out_channels, conv.in_channels
    g = grouped.groups
    per_in, per_out = cin // g, cout // g
    w = conv.weight.detach().reshape(cout, cin)
    # Row perm[i] of the grouped conv lands at output i after the shuffle: it must hold W[i].
    unshuffled = torch.empty_like(w)
    unshuffled[perm] = w
    blocks = unshuffled.reshape(g, per_out, g, per_in)
    diagonal = torch.stack([blocks[k, :, k, :] for k in range(g)])  # g x per_out x per_in
    grouped.weight.copy_(diagonal.reshape(cout, per_in, 1, 1))
    if conv.bias is not None:
        assert grouped.bias is not None  # grouped_from gives it a bias when `conv` has one
        unshuffled_bias = torch.empty_like(conv.bias)
        unshuffled_bias[perm] = conv.bias
        grouped.bias.copy_(unshuffled_bias)


def kept_energy(conv: nn.Conv2d, groups: int) -> float:
    """Fraction of the squared weights the `fit` init keeps."""
    new = grouped_from(conv, groups, "fit")[0]
    assert isinstance(new, nn.Conv2d)
    total = float(conv.weight.detach().pow(2).sum())
    return 1.0 if total == 0 else float(new.weight.detach().pow(2).sum()) / total


def grouped_pointwise(model: nn.Module, selection: Selection, groups: int = 4, init: str = "fit") -> Edit:
    edit = Edit("grouped_pointwise", {"groups": groups, "init": init})
    layers, skipped = [], []
    targets = list(selected(model, selection, lambda m: is_pointwise(m) and channels_ok(m, selection.min_channels)))
    for name, conv in targets:
        assert isinstance(conv, nn.Conv2d)  # is_pointwise
        g = effective_groups(conv.in_channels, conv.out_channels, groups)
        if g < 2:
            skipped.append({"path": name, "reason": f"no group count in 2..{groups} divides {conv.in_channels} and {conv.out_channels}"})
            continue
        info: dict[str, Any] = {"path": name, "in": conv.in_channels, "out": conv.out_channels, "groups": g}
        if init == "fit":
            info["weight_energy_kept"] = round(kept_energy(conv, g), 4)
        edit.replace(model, name, grouped_from(conv, g, init))
        layers.append(info)
    edit.summary = {"count": len(layers), "layers": layers, "skipped": skipped}
    return edit
