"""The channel-dependency analysis: which channels must share a fate, and why."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from torch import nn

from edge_pipeline.compress.pruning.graph import FIXED, ChannelGraph, block_shuffle_groups
from edge_pipeline.models.layers import ChannelShuffle, shuffle_permutation

from .pruning_models import GroupedShuffleNet, InlineShuffleNet


def producer_classes(graph: ChannelGraph) -> dict[str, np.ndarray]:
    out = {}
    for use in graph.uses:
        if use.kind in ("conv", "linear") and use.path not in out:
            out[use.path] = graph.classes(use.outputs)
    return out


@pytest.mark.parametrize("channels,groups", [(8, 2), (12, 3), (24, 4), (6, 6)])
def test_block_shuffles_are_recognized_and_other_permutations_are_not(channels, groups):
    perm = shuffle_permutation(channels, groups).numpy()
    assert block_shuffle_groups(perm) == groups or np.array_equal(perm, np.arange(channels))
    assert block_shuffle_groups(np.roll(np.arange(channels), 1)) is None


def test_residual_add_joins_the_channels_it_adds():
    class Res(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = nn.Conv2d(3, 4, 1), nn.Conv2d(4, 4, 1), nn.Conv2d(4, 2, 1)

        def forward(self, x):
            y = self.a(x)
            return self.c(y + self.b(y)).mean([2, 3])

    g = ChannelGraph(Res(), torch.zeros(1, 3, 4, 4))
    cls = producer_classes(g)
    assert np.array_equal(cls["a"], cls["b"])  # channel i of a and of b are one class
    assert len(set(cls["a"].tolist())) == 4 and FIXED not in cls["a"]
    assert set(cls["c"].tolist()) == {FIXED}  # reaches the output: the logits


def test_depthwise_channels_live_and_die_with_their_input():
    model = nn.Sequential(nn.Conv2d(3, 6, 1), nn.Conv2d(6, 12, 3, groups=6), nn.Conv2d(12, 2, 1))
    cls = producer_classes(ChannelGraph(model, torch.zeros(1, 3, 5, 5)))
    assert np.array_equal(np.repeat(cls["0"], 2), cls["1"])  # channel multiplier 2: outputs 2i, 2i+1 <- input i


def test_grouped_conv_couples_the_same_position_in_every_group():
    model = nn.Sequential(nn.Conv2d(3, 8, 1), nn.Conv2d(8, 8, 1, groups=4), nn.Conv2d(8, 2, 1))
    cls = producer_classes(ChannelGraph(model, torch.zeros(1, 3, 4, 4)))
    assert len(set(cls["0"].tolist())) == 2  # input blocks of 2: position 0 of every block together, position 1 too
    assert np.array_equal(cls["0"].reshape(4, 2)[0], cls["0"].reshape(4, 2)[3])
    assert len(set(cls["1"].tolist())) == 2


def test_shuffle_module_and_inline_shuffle_give_the_same_coupling():
    module_net = nn.Sequential(nn.Conv2d(3, 8, 1), ChannelShuffle(8, 2), nn.Conv2d(8, 2, 1))

    class Inline(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 8, 1), nn.Conv2d(8, 2, 1)

        def forward(self, x):
            y = self.a(x)
            n, c, h, w = y.shape
            return self.b(y.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w))

    a = producer_classes(ChannelGraph(module_net, torch.zeros(1, 3, 4, 4)))["0"]
    b = producer_classes(ChannelGraph(Inline(), torch.zeros(1, 3, 4, 4)))["a"]
    for cls in (a, b):
        grid = cls.reshape(2, 4)  # 2 shuffle groups of 4: position m of both groups is one class
        assert np.array_equal(grid[0], grid[1]) and len(set(cls.tolist())) == 4


def test_shufflenet_units_keep_branch_channels_free_and_couple_the_trunk():
    g = ChannelGraph(InlineShuffleNet(), torch.zeros(1, 3, 8, 8))
    cls = producer_classes(g)
    inner = cls["units.0.branch.0"]
    assert len(set(inner.tolist())) == 16 and FIXED not in inner  # branch-internal: every channel its own class
    trunk = Counter(cls["stem.0"].tolist())
    assert len(trunk) < 32 and len(set(trunk.values())) == 1  # the shuffles couple trunk channels evenly


def test_fixed_channels_say_why():
    g = ChannelGraph(GroupedShuffleNet(), torch.zeros(1, 3, 8, 8), ignore=["stem"])
    assert "stem.0: in prune.ignore" in g.fixed_reasons
    assert "model output (logits)" in g.fixed_reasons


@pytest.mark.parametrize("how,prunable", [("chunk", True), ("split_traced", True), ("split_literal", False), ("split_list", False)])
def test_splits_that_recut_equal_parts_couple_positions_and_fixed_cuts_stay(how, prunable):
    class Split(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = nn.Conv2d(3, 8, 1), nn.Conv2d(4, 4, 1), nn.Conv2d(4, 4, 1)

        def forward(self, x):
            y = self.a(x)
            if how == "chunk":
                p, q = y.chunk(2, 1)
            elif how == "split_traced":
                p, q = y.split(y.shape[1] // 2, 1)
            elif how == "split_literal":
                p, q = y.split(4, 1)
            else:
                p, q = torch.split(y, [4, 4], 1)
            return (self.b(p) + self.c(q)).mean([2, 3])

    cls = producer_classes(ChannelGraph(Split(), torch.zeros(1, 3, 4, 4)))["a"]
    if prunable:
        assert np.array_equal(cls[:4], cls[4:]) and FIXED not in cls
    else:
        assert set(cls.tolist()) == {FIXED}
