"""Early exits on tiny models: where the chain is cut, that the branches survive save and reload,
what each training objective touches, and how the threshold is chosen."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from edge_pipeline.compress.early_exit import (
    ExitChain,
    attach_exits,
    choose_cuts,
    choose_threshold,
    cumulative_costs,
    exit_indices,
    exit_logits,
    freeze_backbone,
    joint_loss,
    outcome,
    rescale_branches,
    self_distillation,
    threshold_grid,
    uncertainty,
)
from edge_pipeline.convert.segments import cut_points, feature_layout, named_cuts, split, trace
from edge_pipeline.models.base import BaseSpec, build_model
from edge_pipeline.models.exit_branches import EXITS_ATTRIBUTE, exits_of
from edge_pipeline.models.store import TrackedModel, load_model, save_model
from edge_pipeline.stages.early_exit import EarlyExitConfig
from edge_pipeline.training import fit

SHAPE = (1, 1, 16, 16)


def tiny(arch: str = "vgg_small") -> TrackedModel:
    torch.manual_seed(0)
    spec = BaseSpec(arch, 10, 1, 16, 0.5)
    return TrackedModel(build_model(spec).eval(), spec)


def with_exits(arch: str = "vgg_small", conv_width: float = 2.0, pool_size: int = 2) -> TrackedModel:
    model = tiny(arch)
    attach_exits(model, choose_cuts(model.module, SHAPE, "auto"), 10, conv_width, pool_size, {"at": "auto"})
    return model


def test_auto_cuts_end_each_resolution_stage_but_the_last():
    vgg = [c.label for c in choose_cuts(tiny().module, SHAPE, "auto")]
    assert vgg == ["features.6", "features.13"]  # the pooled output of the 16 px and 8 px stages
    resnet = choose_cuts(tiny("resnet20").module, SHAPE, "auto")
    assert [c.label for c in resnet] == ["layer1.2.relu2", "layer2.2.relu2"]  # block outputs, never inside a block
    assert [c.shape[2:] for c in resnet] == [(16, 16), (8, 8)]


def test_a_cut_inside_a_residual_block_is_refused_with_the_valid_ones():
    graph = trace(tiny("resnet20").module, SHAPE)
    with pytest.raises(ValueError, match="more than one tensor crosses") as info:
        named_cuts(graph, ["layer1.0.conv2"])  # the block's skip connection crosses too
    assert "layer1.0.relu2" in str(info.value)
    assert [c.label for c in named_cuts(graph, ["layer2.0", "layer1.1"])] == ["layer1.1.relu2", "layer2.0.relu2"]
    with pytest.raises(ValueError, match="not a module"):
        named_cuts(graph, ["no.such.layer"])


def test_every_cut_point_is_a_single_tensor_crossing():
    graph = trace(tiny("resnet20").module, SHAPE)
    nodes = list(graph.graph.nodes)
    position = {n: i for i, n in enumerate(nodes)}
    for cut in cut_points(graph):
        i = next(position[n] for n in nodes if n.name == cut.node)
        crossing = {n.name for n in nodes[: i + 1] if n.op != "get_attr" and any(position[u] > i for u in n.users)}
        assert crossing == {cut.node}


@pytest.mark.parametrize("arch", ["vgg_small", "resnet20", "convnet_5x5"])
def test_segments_chained_compute_exactly_the_model(arch):
    module = tiny(arch).module
    graph = trace(module, SHAPE)
    segments = split(graph, [c.node for c in choose_cuts(module, SHAPE, "auto")])
    x = torch.randn(4, *SHAPE[1:])
    h = x
    with torch.no_grad():
        for segment in segments:
            h = segment(h)
        assert torch.equal(h, module(x))


def test_untraceable_model_is_a_clear_error():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3)

        def forward(self, x):
            return self.conv(x) if x.sum() > 0 else self.conv(-x)

    with pytest.raises(ValueError, match="torch.fx cannot trace"):
        choose_cuts(Branchy(), SHAPE, "auto")


def test_exits_survive_save_and_reload_and_forward_still_returns_final_logits(tmp_path):
    model = with_exits()
    with torch.no_grad():
        for p in model.module.get_submodule(EXITS_ATTRIBUTE).parameters():
            p.normal_()
    x = torch.randn(3, *SHAPE[1:])
    before = ExitChain(model.module, SHAPE).eval().exits(x)
    save_model(model, tmp_path)
    loaded = load_model(tmp_path)
    exits = exits_of(loaded.module)
    assert exits is not None and exits.cuts == exits_of(model.module).cuts
    after = ExitChain(loaded.module, SHAPE).eval().exits(x)
    assert len(after) == 3
    for a, b in zip(before, after):
        assert torch.equal(a, b)
    with torch.no_grad():
        assert torch.equal(loaded.module(x), after[-1])  # forward: the final classifier, as before
    assert [e.transform for e in loaded.edits] == ["early_exit"]


def test_exits_are_attached_once():
    model = with_exits()
    with pytest.raises(ValueError, match="already has exit branches"):
        attach_exits(model, choose_cuts(model.module, SHAPE, "auto"), 10, 0, 1, {})


def test_branch_shape_options():
    branches = exits_of(with_exits(conv_width=0, pool_size=1).module).branches
    assert [b.conv_channels for b in branches] == [0, 0] and branches[0].fc.in_features == 8
    branches = exits_of(with_exits(conv_width=2, pool_size=2).module).branches
    assert [b.conv_channels for b in branches] == [16, 32] and branches[0].fc.in_features == 16 * 4


def _state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


def test_self_distillation_trains_only_the_branches_and_they_learn_the_final_classifier(tiny_data):
    model = tiny()
    fit(model.module, tiny_data, EarlyExitConfig(epochs=2, lr=0.05), 0, lambda m, x, y: (nn.functional.cross_entropy(m(x), y), m(x)), "t")
    attach_exits(model, choose_cuts(model.module, SHAPE, "auto"), 10, 2.0, 2, {})
    backbone = {k: v for k, v in _state(model.module).items() if not k.startswith(EXITS_ATTRIBUTE)}
    frozen = freeze_backbone(model.module)
    chain = ExitChain(model.module, tiny_data.input_shape, frozen_backbone=True)
    logits, _ = exit_logits(chain, tiny_data.loader("val"))
    agreement_before = [(logits[k].argmax(-1) == logits[-1].argmax(-1)).mean() for k in range(2)]
    fit(chain, tiny_data, EarlyExitConfig(epochs=3), 0, self_distillation(4.0), "exits")
    after = _state(model.module)
    assert all(torch.equal(after[k], v) for k, v in backbone.items())  # weights and BatchNorm statistics
    assert frozen and all(not p.requires_grad for p in frozen)
    logits, _ = exit_logits(chain, tiny_data.loader("val"))
    agreement_after = [(logits[k].argmax(-1) == logits[-1].argmax(-1)).mean() for k in range(2)]
    assert all(a > b + 0.3 for a, b in zip(agreement_after, agreement_before))


def test_joint_training_changes_the_backbone(tiny_data):
    model = with_exits()
    backbone = {k: v for k, v in _state(model.module).items() if not k.startswith(EXITS_ATTRIBUTE) and "weight" in k}
    chain = ExitChain(model.module, tiny_data.input_shape, frozen_backbone=False)
    history = fit(chain, tiny_data, EarlyExitConfig(epochs=1, lr=0.01, joint=True), 0, joint_loss(), "joint")
    after = _state(model.module)
    assert any(not torch.equal(after[k], v) for k, v in backbone.items())
    assert history[0]["loss"] > 0


def test_uncertainty_measures():
    uniform, sure = np.zeros((1, 10)), np.array([[50.0] + [0.0] * 9])
    assert uncertainty(uniform, "entropy")[0] == pytest.approx(1.0)
    assert uncertainty(sure, "entropy")[0] == pytest.approx(0.0, abs=1e-12)
    assert uncertainty(uniform, "max_softmax")[0] == pytest.approx(0.9)
    assert uncertainty(sure, "max_softmax")[0] == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="unknown uncertainty"):
        uncertainty(uniform, "margin")


def synthetic(n: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """3 exits; the first is sure and right on the first half, unsure on the rest, the second
    right on 3/4, the final right on all but 2."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    logits = rng.normal(0, 0.1, (3, n, 10))
    logits[0, np.arange(n // 2), labels[: n // 2]] = 20.0
    logits[1, np.arange(3 * n // 4), labels[: 3 * n // 4]] = 8.0
    logits[2, np.arange(n), labels] = 5.0
    logits[2, [n - 1, n - 2]] = np.roll(logits[2, [n - 1, n - 2]], 1, axis=-1)
    return logits, labels


def test_exit_indices_take_the_first_confident_exit():
    u = np.array([[0.9, 0.1, 0.9], [0.2, 0.1, 0.9], [0.5, 0.5, 0.5]])
    assert exit_indices(u, 0.3).tolist() == [1, 0, 2]
    assert exit_indices(u, 0.0).tolist() == [2, 2, 2]  # threshold 0: nothing exits early


def test_threshold_choice_is_the_cheapest_within_the_drop():
    logits, labels = synthetic()
    costs = cumulative_costs([100, 100, 100], [10, 10])
    assert costs == [110, 220, 320]
    exact, reference = choose_threshold(logits, labels, "entropy", costs, 0.0)
    assert reference == pytest.approx(0.99) and exact.accuracy >= reference
    assert exact.exit_counts[0] == 100  # the sure half leaves at once, at no accuracy cost
    loose, _ = choose_threshold(logits, labels, "entropy", costs, 0.5)
    assert loose.expected_macs <= exact.expected_macs and loose.accuracy >= reference - 0.5
    never = outcome(logits, labels, "entropy", 0.0, costs)
    assert never.exit_counts == [0, 0, 200] and never.expected_macs == 320 and never.accuracy == pytest.approx(reference)
    grid = threshold_grid(logits, "entropy", exact.threshold)
    assert grid[0] == 0.0 and exact.threshold in grid and grid == sorted(grid)
    everything = outcome(logits, labels, "entropy", grid[-1], costs)
    assert everything.exit_counts[0] == 200  # the top of the grid sends every input out at the first exit


@pytest.mark.parametrize("conv_width", [2.0, 0.0])
def test_branches_follow_a_per_channel_rescale_across_a_cut(conv_width):
    """What cross-layer equalization does when a pair straddles a cut: the map at the cut is scaled
    per channel (the model's output is not); the branch takes the inverse and gives the same logits."""
    reference = with_exits(conv_width=conv_width)
    with torch.no_grad():
        for p in reference.module.get_submodule(EXITS_ATTRIBUTE).parameters():
            p.normal_()
    scaled = reference.copy()
    factors = torch.linspace(0.5, 4.0, 8)
    m = scaled.module
    with torch.no_grad():  # BN -> ReLU -> max-pool (the cut) -> conv: scale before the cut, undo after it
        m.features[4].weight.mul_(factors)
        m.features[4].bias.mul_(factors)
        m.features[7].weight.div_(factors.view(1, -1, 1, 1))
    x = torch.randn(6, *SHAPE[1:])
    chain, ref_chain = ExitChain(m, SHAPE).eval(), ExitChain(reference.module, SHAPE).eval()
    with torch.no_grad():
        assert torch.allclose(m(x), reference.module(x), atol=1e-5)
        assert not torch.allclose(chain.exits(x)[0], ref_chain.exits(x)[0], atol=1e-3)
    changed = rescale_branches(chain, ref_chain, x)
    assert [c["cut"] for c in changed] == [0]
    assert changed[0]["min_factor"] == pytest.approx(0.5, rel=1e-4) and changed[0]["max_factor"] == pytest.approx(4.0, rel=1e-4)
    with torch.no_grad():
        for a, b in zip(chain.exits(x), ref_chain.exits(x)):
            assert torch.allclose(a, b, atol=1e-4)
        m.features[7].weight.add_(0.1)  # not a rescale: refused
    with pytest.raises(ValueError, match="cut 2 changed beyond a per-channel scale"):
        rescale_branches(chain, ref_chain, x)


def test_feature_layout_is_read_from_the_values_even_for_a_square_map():
    rng = np.random.default_rng(0)
    reference = rng.standard_normal((2, 8, 8, 8)).astype(np.float32)  # C == H == W: the shape cannot tell
    assert feature_layout(reference.transpose(0, 2, 3, 1), reference) == ("NHWC", 0.0)
    assert feature_layout(reference, reference) == ("NCHW", 0.0)
    wide = rng.standard_normal((2, 32, 8, 8)).astype(np.float32)
    layout, error = feature_layout(wide.transpose(0, 2, 3, 1) + 0.01, wide)
    assert layout == "NHWC" and 0 < error < 0.01
