"""Filter pruning really removes channels, keeps the logits layer, and follows dependencies."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edge_pipeline.compress.prune import CRITERIA, prune_filters
from edge_pipeline.evaluation import count_params
from edge_pipeline.models import BaseSpec, build_model


@pytest.mark.parametrize("arch", ["vgg_small", "resnet8"])
def test_half_of_the_filters_are_removed(arch):
    torch.manual_seed(0)
    model = build_model(BaseSpec(arch, 10, 1, 16)).eval()
    convs_before = {n: m.out_channels for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    params_before = count_params(model)
    edit = prune_filters(model, torch.zeros(1, 1, 16, 16), 0.5, round_to=4)
    convs_after = {n: m.out_channels for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    assert all(convs_after[n] == convs_before[n] // 2 for n in convs_before)
    assert model(torch.zeros(2, 1, 16, 16)).shape == (2, 10)  # logits kept
    assert count_params(model) < 0.4 * params_before
    assert edit.ops and all(op["op"] == "replace" for op in edit.ops)
    for group in edit.summary["groups"]:
        assert len(group["kept"]) == group["channels_before"] // 2


def test_l1_keeps_the_filters_with_largest_norm():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3), nn.Flatten(), nn.Linear(4 * 12 * 12, 3))
    with torch.no_grad():
        for i in range(8):
            model[0].weight[i].fill_(float(i + 1) * (1 if i % 2 else -1))
    edit = prune_filters(model, torch.zeros(1, 1, 16, 16), 0.5, criterion="l1")
    first = next(g for g in edit.summary["groups"] if g["root"] == "0")
    assert first["kept"] == [4, 5, 6, 7]
    assert model[0].weight.abs().sum(dim=(1, 2, 3)).tolist() == [9 * 5.0, 9 * 6.0, 9 * 7.0, 9 * 8.0]


@pytest.mark.parametrize("criterion", CRITERIA)
def test_round_to_keeps_channel_multiples(criterion):
    model = build_model(BaseSpec("vgg_small", 10, 1, 16))
    prune_filters(model.eval(), torch.zeros(1, 1, 16, 16), 0.3, criterion=criterion, round_to=8)
    assert all(m.out_channels % 8 == 0 for m in model.modules() if isinstance(m, nn.Conv2d))
