"""Unstructured magnitude pruning: the requested share of weights is zero and stays zero."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edge_pipeline.compress.pruning.unstructured import keep_zeros, magnitude_prune, masks_from_edits
from edge_pipeline.models import BaseSpec, build_model


def weights(model):
    return [m.weight for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


@pytest.mark.parametrize("scope", ["global", "per_layer"])
def test_sparsity_is_reached_and_the_logits_layer_is_dense(scope):
    torch.manual_seed(0)
    model = build_model(BaseSpec("vgg_small", 10, 1, 16))
    edit = magnitude_prune(model, 0.8, scope)
    assert edit.summary["sparsity"] == pytest.approx(0.8, abs=0.002)
    assert float((model.classifier[4].weight == 0).float().mean()) == 0.0
    if scope == "per_layer":
        assert all(v == pytest.approx(0.8, abs=0.01) for v in edit.summary["layers"].values())
    assert edit.ops == []  # nothing structural: the zeros live in the weights


def test_global_scope_prunes_small_weights_first():
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 2))
    with torch.no_grad():
        model[0].weight.fill_(0.01)
        model[1].weight.fill_(1.0)
    magnitude_prune(model, 0.5, "global")
    assert bool((model[0].weight == 0).all()) and bool((model[1].weight != 0).all())


def test_fine_tuning_keeps_the_zeros():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))
    edit = magnitude_prune(model, 0.5, "global")
    masks = masks_from_edits(model, [edit])
    hook = keep_zeros(masks)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(5):
        loss = model(torch.randn(16, 8)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        hook(model)
    assert float((model[0].weight == 0).float().mean()) == pytest.approx(edit.summary["layers"]["0"])
