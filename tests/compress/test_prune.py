"""Structured pruning: criteria, targets, allocation, dependency handling (exact restriction), replay."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from edge_pipeline.compress.pruning import ALLOCATIONS, CRITERIA, Target, prune_channels
from edge_pipeline.errors import PipelineError, UserError
from edge_pipeline.models import BaseSpec, build_model
from edge_pipeline.models.counting import count_macs, count_params
from edge_pipeline.models.store import TrackedModel, load_model, save_model

from .pruning_models import (
    GroupedShuffleNet,
    HardcodedViewNet,
    InlineShuffleNet,
    SqueezeExciteNet,
    randomize,
    zero_removed,
)

X16 = torch.zeros(1, 1, 16, 16)


def calibration(n: int = 32, channels: int = 1, size: int = 16):
    gen = torch.Generator().manual_seed(0)
    return torch.randn(n, channels, size, size, generator=gen), torch.randint(0, 10, (n,), generator=gen)


def zoo(arch: str = "vgg_small") -> nn.Module:
    torch.manual_seed(0)
    return randomize(build_model(BaseSpec(arch, 10, 1, 16)))


# -- ratio, l1, round_to (the original behaviour) -------------------------------------------


@pytest.mark.parametrize("arch", ["vgg_small", "resnet8"])
def test_half_of_the_filters_are_removed(arch):
    model = zoo(arch)
    convs_before = {n: m.out_channels for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    params_before = count_params(model)
    edit = prune_channels(model, X16, Target("ratio", 0.5), round_to=4)
    convs_after = {n: m.out_channels for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    assert all(convs_after[n] == convs_before[n] // 2 for n in convs_before)
    assert model(torch.zeros(2, 1, 16, 16)).shape == (2, 10)  # logits kept
    assert count_params(model) < 0.4 * params_before
    assert edit.ops and {op["op"] for op in edit.ops} == {"replace"}
    for group in edit.summary["groups"]:
        assert len(group["kept"]) == group["channels_before"] // 2


def test_l1_keeps_the_filters_with_largest_norm():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3), nn.Flatten(), nn.Linear(4 * 12 * 12, 3))
    with torch.no_grad():
        for i in range(8):
            model[0].weight[i].fill_(float(i + 1) * (1 if i % 2 else -1))
    edit = prune_channels(model, X16, Target("ratio", 0.5), "l1")
    first = next(g for g in edit.summary["groups"] if g["root"] == "0")
    assert first["kept"] == [4, 5, 6, 7]
    assert model[0].weight.abs().sum(dim=(1, 2, 3)).tolist() == [9 * 5.0, 9 * 6.0, 9 * 7.0, 9 * 8.0]


@pytest.mark.parametrize("criterion", CRITERIA)
@pytest.mark.parametrize("allocation", ALLOCATIONS)
def test_round_to_keeps_channel_multiples(criterion, allocation):
    model = zoo()
    prune_channels(model, X16, Target("ratio", 0.3), criterion, allocation, round_to=8, calibration=calibration())
    assert all(m.out_channels % 8 == 0 for m in model.modules() if isinstance(m, nn.Conv2d))
    assert model(X16).shape == (1, 10)


# -- criteria ---------------------------------------------------------------------------------


def two_layer(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 6, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3))


def kept_of(edit, root: str = "0") -> list[int]:
    return next(g["kept"] for g in edit.summary["groups"] if g["root"] == root)


def test_l2_ranks_by_filter_norm():
    model = two_layer()
    with torch.no_grad():
        scale = torch.tensor([8.0, 1, 7, 2, 6, 3, 5, 4]).view(8, 1, 1, 1)
        model[0].weight.copy_(torch.randn_like(model[0].weight).sign() * scale)
    assert kept_of(prune_channels(model, X16, Target("ratio", 0.5), "l2")) == [0, 2, 4, 6]


def test_bn_scale_keeps_the_largest_gammas():
    model = two_layer()
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([0.01, 0.9, 0.02, 0.8, 0.03, 0.7, -0.6, 0.04]))
    assert kept_of(prune_channels(model, X16, Target("ratio", 0.5), "bn_scale")) == [1, 3, 5, 6]


def test_taylor_removes_channels_the_loss_does_not_depend_on():
    """Channels 0-3 have the largest filters but the next layer ignores them: l1 keeps them, taylor
    (gradient x weight) sees they do not matter."""
    model = two_layer()
    with torch.no_grad():
        model[0].weight[:4] *= 10
        model[3].weight[:, :4] = 0
    assert kept_of(prune_channels(copy.deepcopy(model), X16, Target("ratio", 0.5), "l1")) == [0, 1, 2, 3]
    gen = torch.Generator().manual_seed(1)
    data = (torch.randn(64, 1, 16, 16, generator=gen), torch.randint(0, 3, (64,), generator=gen))
    assert kept_of(prune_channels(model, X16, Target("ratio", 0.5), "taylor", calibration=data)) == [4, 5, 6, 7]


def test_taylor_works_on_a_frozen_model_and_leaves_it_frozen():
    """A model that served as a distillation teacher has requires_grad off: taylor still scores it."""
    from edge_pipeline.compress.pruning.criteria import scores
    from edge_pipeline.compress.pruning.graph import ChannelGraph
    from edge_pipeline.compress.pruning.problem import build_problem

    model = two_layer()
    for p in model.parameters():
        p.requires_grad_(False)
    problem = build_problem(ChannelGraph(model, X16), model, None, 0.9)
    gen = torch.Generator().manual_seed(1)
    data = (torch.randn(16, 1, 16, 16, generator=gen), torch.randint(0, 3, (16,), generator=gen))
    values = scores("taylor", problem, model, calibration=data)
    assert values.shape == (len(problem.classes),) and (values > 0).all()
    assert not any(p.requires_grad for p in model.parameters())


def test_taylor_needs_calibration_data():
    with pytest.raises(ValueError, match="calibration"):
        prune_channels(two_layer(), X16, Target("ratio", 0.5), "taylor")


def test_random_is_a_seeded_control():
    kept = [kept_of(prune_channels(two_layer(), X16, Target("ratio", 0.5), "random", seed=s)) for s in (0, 0, 1, 2)]
    assert kept[0] == kept[1] and len({tuple(k) for k in kept}) > 1


# -- targets and allocation -------------------------------------------------------------------


@pytest.mark.parametrize("allocation", ALLOCATIONS)
@pytest.mark.parametrize("kind", ["macs", "params"])
@pytest.mark.parametrize("arch", ["vgg_small", "resnet8"])
def test_macs_and_params_targets_are_met_within_5_percent(arch, kind, allocation):
    model = zoo(arch)
    measure = (lambda m: count_macs(m, X16.shape)) if kind == "macs" else count_params
    before = measure(model)
    edit = prune_channels(model, X16, Target(kind, 0.5), "l1", allocation)
    after = measure(model)
    assert 0.475 <= after / before <= 0.5  # at or below the target, by at most one small step
    assert edit.summary[kind] == [before, after]  # the planner's exact prediction


def test_global_ratio_removes_that_share_of_all_channels():
    model = zoo("resnet8")
    edit = prune_channels(model, X16, Target("ratio", 0.4), "l1", "global")
    before, after = edit.summary["channels"]
    assert 0.6 - 0.02 <= after / before <= 0.6


def test_global_allocation_prunes_layers_unevenly_by_importance():
    """bn_scale compares raw |gamma| across layers (Network Slimming's global threshold): a layer whose
    scales were driven to ~0 goes down to max_ratio, the others lose little."""
    model = zoo()
    with torch.no_grad():
        model.features[8].weight *= 0.01  # the BatchNorm of conv features.7
    edit = prune_channels(model, X16, Target("ratio", 0.3), "bn_scale", "global", max_ratio=0.75)
    layers = edit.summary["layers"]
    assert layers["features.7"]["out"][1] / layers["features.7"]["out"][0] == pytest.approx(0.25)
    others = [v["out"][1] / v["out"][0] for k, v in layers.items() if v["kind"] == "conv" and k != "features.7"]
    assert min(others) >= 0.5


def test_max_ratio_bounds_every_layer_group():
    model = zoo()
    edit = prune_channels(model, X16, Target("macs", 0.3), "random", "global", max_ratio=0.6)
    for layer in edit.summary["layers"].values():
        if "out" in layer:
            assert layer["out"][1] >= 0.4 * layer["out"][0] - 1e-9


def test_unreachable_target_is_a_clear_error():
    with pytest.raises(UserError, match=r"macs at most 0.01 .* out of reach: .* keeps \d+\.\d% of MACs"):
        prune_channels(zoo(), X16, Target("macs", 0.01), "l1", "per_layer", max_ratio=0.5)


def test_ignored_layers_keep_their_channels():
    model = zoo()
    edit = prune_channels(model, X16, Target("ratio", 0.5), "l1", ignore=["features.0", "classifier"])
    assert model.features[0].out_channels == 16 and model.classifier[1].out_features == 128
    assert "features.0: in prune.ignore" in edit.summary["unprunable_because"]


# -- dependency handling: the pruned model is the original restricted to the kept channels -------


def torchvision_model(name: str) -> nn.Module:
    torch.manual_seed(0)
    return randomize(build_model(BaseSpec(f"torchvision:{name}", 10, 3, 32)))


def grouped_pointwise_model() -> nn.Module:
    """vgg_small made depthwise-separable, then its pointwise convs grouped + shuffled (issue 3's
    `grouped_pointwise` transform: a grouped 1x1 conv followed by a ChannelShuffle module)."""
    from edge_pipeline.compress import grouped
    from edge_pipeline.compress.depthwise import depthwise_separable
    from edge_pipeline.compress.select import Selection

    torch.manual_seed(0)
    model = build_model(BaseSpec("vgg_small", 10, 3, 16))
    depthwise_separable(model, Selection(min_channels=8))
    edit = grouped.grouped_pointwise(model, Selection(min_channels=8), groups=4)
    assert edit.ops, "grouped_pointwise changed nothing"
    return randomize(model)


STRUCTURES = {
    "vgg_small (flatten into Linear)": lambda: randomize(build_model(BaseSpec("vgg_small", 10, 3, 16))),
    "resnet8 (residual adds)": lambda: randomize(build_model(BaseSpec("resnet8", 10, 3, 16))),
    "grouped 1x1 + shuffle module": lambda: randomize(GroupedShuffleNet()),
    "inline chunk/cat/view shuffle": lambda: randomize(InlineShuffleNet()),
    "squeeze-excite + shared conv": lambda: randomize(SqueezeExciteNet()),
    "grouped_pointwise restructure": grouped_pointwise_model,
}
TORCHVISION = ["shufflenet_v2_x0_5", "resnet18", "mobilenet_v2"]


def check_exact_restriction(model: nn.Module, size: int, target: Target, allocation: str = "global") -> dict:
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(3))
    pruned = copy.deepcopy(model)
    edit = prune_channels(pruned, x[:1], target, "random", allocation, seed=1)
    assert edit.summary["classes"]["removed"] > 0
    with torch.no_grad():
        expected, got = zero_removed(model, edit.summary)(x), pruned(x)
    assert torch.allclose(got, expected, atol=1e-5, rtol=1e-4), float((got - expected).abs().max())
    assert count_macs(pruned, (1, 3, size, size)) == edit.summary["macs"][1]
    return edit.summary


@pytest.mark.parametrize("name", list(STRUCTURES))
def test_pruned_model_is_the_original_restricted_to_kept_channels(name):
    check_exact_restriction(STRUCTURES[name](), 16, Target("macs", 0.6))


@pytest.mark.slow  # three torchvision models at 32 px: ~10-30 s each on 2 shared cores
@pytest.mark.parametrize("name", TORCHVISION)
def test_torchvision_models_prune_exactly_to_a_macs_target(name):
    summary = check_exact_restriction(torchvision_model(name), 32, Target("macs", 0.5), "per_layer")
    assert 0.475 <= summary["macs"][1] / summary["macs"][0] <= 0.5


def test_grouped_convs_keep_equal_groups_and_shuffles_are_rebuilt():
    model = randomize(GroupedShuffleNet())
    prune_channels(model, torch.zeros(1, 3, 16, 16), Target("ratio", 0.5), "l1")
    grouped = model.body[0][0]
    shuffle = model.body[0][1]
    assert grouped.groups == 4 and grouped.out_channels == 16 and grouped.in_channels == 8
    assert (shuffle.channels, shuffle.groups) == (16, 4)


def test_a_shape_that_pruning_cannot_follow_is_reported_not_mis_wired():
    model = HardcodedViewNet()
    with pytest.raises(PipelineError, match="no longer runs .* add the layer to prune.ignore"):
        prune_channels(model, torch.zeros(1, 3, 8, 8), Target("ratio", 0.5), "l1")
    model = HardcodedViewNet()
    edit = prune_channels(model, torch.zeros(1, 3, 8, 8), Target("ratio", 0.5), "l1", ignore=["conv"])
    assert edit.summary["classes"]["prunable"] == 0 and model.conv.out_channels == 8


def test_unknown_ops_leave_their_channels_alone():
    class CumsumNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.fc = nn.Conv2d(3, 8, 3), nn.Conv2d(3, 8, 3), nn.Linear(16, 4)

        def forward(self, x):
            return self.fc(torch.cat([self.a(x).cumsum(1), self.b(x)], 1).mean([2, 3]))

    model = CumsumNet()
    edit = prune_channels(model, torch.zeros(1, 3, 8, 8), Target("ratio", 0.5), "l1")
    assert model.a.out_channels == 8 and model.b.out_channels == 4
    assert any("cumsum" in reason for reason in edit.summary["unprunable_because"])


# -- replay ---------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["resnet8", "vgg_small"])
def test_saved_pruning_replays_on_reload(tmp_path, arch):
    base = BaseSpec(arch, 10, 3, 16)
    model = TrackedModel(randomize(build_model(base)), base, [])
    x = torch.randn(2, 3, 16, 16)
    for step in range(2):  # two rounds: edits replay in order
        model.edits.append(prune_channels(model.module, x[:1], Target("macs", 0.7), "l2", "global", seed=step))
    save_model(model, tmp_path)
    loaded = load_model(tmp_path)
    with torch.no_grad():
        assert torch.equal(loaded.module(x), model.module.eval()(x))
    assert [e.transform for e in loaded.edits] == ["prune", "prune"]
    assert all(layer["kept_out"] for layer in loaded.edits[0].summary["layers"].values() if "kept_out" in layer)


def test_replay_of_grouped_shuffle_module():
    """The replay check inside prune_channels rebuilt every module (shuffle included) from its spec."""
    from edge_pipeline.models.edits import replay

    model = randomize(GroupedShuffleNet())
    original = copy.deepcopy(model)
    x = torch.randn(2, 3, 16, 16)
    edit = prune_channels(model, x[:1], Target("macs", 0.5), "l1", "global")
    rebuilt = replay(original, [edit])
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    with torch.no_grad():
        assert torch.equal(rebuilt.eval()(x), model(x))
    assert any(op["module"]["type"] == "ChannelShuffle" for op in edit.ops)


def test_shared_modules_stay_shared_after_replay():
    from edge_pipeline.models.edits import replay

    model = randomize(SqueezeExciteNet())
    original = copy.deepcopy(model)
    model.alias = model.shared  # one module under two paths
    original.alias = original.shared
    edit = prune_channels(model, torch.zeros(1, 3, 16, 16), Target("ratio", 0.5), "l1")
    assert model.alias is model.shared and model.shared.out_channels == 12
    assert {"op": "share", "path": "alias", "source": "shared"} in edit.ops
    rebuilt = replay(original, [edit])
    assert rebuilt.alias is rebuilt.shared


def test_kept_indices_are_recorded_for_every_resized_layer():
    model = zoo("resnet8")
    edit = prune_channels(model, X16, Target("ratio", 0.5), "l1")
    for path, layer in edit.summary["layers"].items():
        module = model.get_submodule(path)
        if layer["kind"] == "conv":
            assert len(layer["kept_out"]) == module.out_channels == layer["out"][1]
            assert layer["kept_out"] == sorted(set(layer["kept_out"]))
        elif layer["kind"] == "norm":
            assert len(layer["kept"]) == module.num_features
    assert np.all([op["op"] == "replace" for op in edit.ops])


def test_the_config_names_and_the_engine_agree():
    """The recipe's `prune.method` choices are exactly the criteria the engine scores."""
    import typing

    from edge_pipeline.stages.prune import PruneConfig

    def literals(annotation) -> set:
        args = typing.get_args(annotation)
        return {a for a in args if isinstance(a, str)} | {x for a in args if not isinstance(a, str) for x in literals(a)}

    assert literals(PruneConfig.model_fields["method"].annotation) == set(CRITERIA) | {"magnitude"}
