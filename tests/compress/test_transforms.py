"""Every restructure transform: shape preservation, exact reload, export, and the maths of its init.

Parametrized over the transform registry: a new transform without an example here fails
`test_every_transform_has_examples`, so it cannot skip the shared checks.
"""

from __future__ import annotations

import copy
import typing

import pytest
import torch
from torch import nn

from edge_pipeline.compress.decompose import compose, decomposed_from, stack_convs
from edge_pipeline.compress.depthwise import inverted_residual_from, separable_from
from edge_pipeline.compress.factorize import factorized_from as factorized_kxk
from edge_pipeline.compress.gap_head import gap_head
from edge_pipeline.compress.grouped import grouped_from
from edge_pipeline.compress.low_rank import factorized_from as low_rank_from
from edge_pipeline.compress.select import Selection
from edge_pipeline.compress.share import find_groups
from edge_pipeline.models import BaseSpec, build_model
from edge_pipeline.models.layers import ChannelShuffle, shuffle_permutation
from edge_pipeline.models.store import TrackedModel, load_model, save_model
from edge_pipeline.stages.restructure import TRANSFORMS
from edge_pipeline.stages.runners.restructure import apply_transform

# name -> list of (arch, image size, [(transform, config), ...]) on which the transform has work to do.
# The first case of each transform is also the one exported to TFLite.
EXAMPLES: dict[str, list[tuple[str, int, list[tuple[str, dict]]]]] = {
    "depthwise_separable": [
        # separable on the first stage, MobileNetV2 block (with residual) on the rest: one export covers both
        ("vgg_small", 16, [("depthwise_separable", {"include": ["features.3"]}),
                           ("depthwise_separable", {"inverted_residual": True, "expansion": 2, "include": ["features.1*"]})]),
        ("resnet8", 16, [("depthwise_separable", {"activation": "relu"})]),
        ("resnet8", 16, [("depthwise_separable", {"inverted_residual": True, "init": "random"})]),
    ],
    "grouped_pointwise": [
        ("resnet8", 16, [("grouped_pointwise", {"groups": 4})]),
        ("vgg_small", 16, [("depthwise_separable", {}), ("grouped_pointwise", {"groups": 8, "init": "random"})]),
    ],
    "factorize": [
        ("vgg_small", 16, [("factorize", {"rank": 8})]),
        ("resnet8", 16, [("factorize", {"energy": 0.5, "activation": "relu"})]),
    ],
    "decompose": [
        ("convnet_5x5", 16, [("decompose", {"min_channels": 8})]),
        ("convnet_5x5", 16, [("decompose", {"activation": "relu", "mid_ratio": 0.5, "init": "random", "min_channels": 8})]),
    ],
    "low_rank": [
        ("vgg_small", 16, [("low_rank", {"energy": 0.5})]),
        ("resnet8", 16, [("low_rank", {"rank": 4, "layers": ["conv"], "init": "random"})]),
    ],
    "gap_head": [
        ("vgg_small", 16, [("gap_head", {})]),
        ("vgg_small", 16, [("gap_head", {"init": "average"})]),
    ],
    "share": [
        ("resnet20", 8, [("share", {})]),
        ("resnet20", 8, [("share", {"init": "mean", "exclude": ["layer3.*"]})]),
    ],
}

CASES = [pytest.param(name, *case, id=f"{name}-{i}") for name, cases in EXAMPLES.items() for i, case in enumerate(cases)]


def build(arch: str, size: int, channels: int = 1, classes: int = 10) -> TrackedModel:
    torch.manual_seed(0)
    # convnet_5x5 at width 0.25 (8/16/24 channels): the decompose fit is the slow part of these tests
    base = BaseSpec(arch, classes, channels, size, 0.25 if arch == "convnet_5x5" else 1.0)
    module = build_model(base).eval()
    _randomize_batchnorm(module)
    return TrackedModel(module, base)


@torch.no_grad()
def _randomize_batchnorm(module: nn.Module) -> None:
    """Trained-looking BN statistics, so errors in how a transform treats BN cannot hide behind identities."""
    gen = torch.Generator().manual_seed(1)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.weight.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.bias.copy_(torch.randn(m.num_features, generator=gen) * 0.1)


def calibration(model: TrackedModel, n: int = 32) -> torch.Tensor:
    b = model.base
    return torch.randn(n, b.in_channels, b.image_size, b.image_size, generator=torch.Generator().manual_seed(2))


def restructure(model: TrackedModel, steps: list[tuple[str, dict]]) -> list[dict]:
    inputs = calibration(model)
    shape = (1, model.base.in_channels, model.base.image_size, model.base.image_size)
    all_facts = []
    for name, config in steps:
        cfg = TRANSFORMS.get(name).Config.model_validate(config)
        edit, facts = apply_transform(model.module, name, cfg, inputs, shape)
        assert edit.ops, f"{name} {config} found nothing to replace"
        model.edits.append(edit)
        all_facts.append(facts)
    return all_facts


def test_every_transform_has_examples():
    assert sorted(EXAMPLES) == TRANSFORMS.names()


@pytest.mark.parametrize("name, arch, size, steps", CASES)
def test_shape_kept_and_reload_exact(name, arch, size, steps, tmp_path):
    model = build(arch, size)
    x = calibration(model, 8)
    with torch.no_grad():
        before = model.module(x)
    facts = restructure(model, steps)
    with torch.no_grad():
        after = model.module(x)
    assert after.shape == before.shape
    last = facts[-1]
    assert last["replaced"] >= 1
    assert last["params_after"] != last["params_before"] or name == "depthwise_separable"
    rec = last["reconstruction"]
    assert rec["samples"] == 32 and rec["logits_rel_error"] >= 0 and 0 <= rec["top1_agreement"] <= 1
    assert all(v is not None for v in rec["layers"].values()), "every probe must be reached by the forward pass"

    save_model(model, tmp_path)
    loaded = load_model(tmp_path)
    assert [e.transform for e in loaded.edits] == [s[0] for s in steps]
    with torch.no_grad():
        again = loaded.module(x)
    assert torch.equal(again, after), "a saved restructured model must reload to the same function"
    assert sum(p.numel() for p in loaded.module.state_dict().values()) == sum(p.numel() for p in model.module.state_dict().values())


def _has_random_init(name: str) -> bool:
    field = TRANSFORMS.get(name).Config.model_fields.get("init")
    return field is not None and "random" in typing.get_args(field.annotation)


@pytest.mark.parametrize("name", [n for n in TRANSFORMS.names() if _has_random_init(n)])
def test_random_init_is_seeded(name):
    arch, size, steps = EXAMPLES[name][0]
    outs = []
    for _ in range(2):
        model = build(arch, size)
        restructure(model, [(n, {**c, "init": "random"}) if n == name else (n, c) for n, c in steps])
        with torch.no_grad():
            outs.append(model.module(calibration(model, 4)))
    assert torch.equal(outs[0], outs[1])


@pytest.mark.parametrize("name", TRANSFORMS.names())
def test_prune_after_restructure_reloads_exactly(name, tmp_path):
    """The quickstart order (restructure -> prune): pruning must work on every new structure and the
    saved result must replay (grouped convs are kept whole; shared layers stay shared)."""
    from edge_pipeline.compress.pruning import Target, prune_channels

    arch, size, steps = EXAMPLES[name][0]
    model = build(arch, size)
    restructure(model, steps)
    params = sum(p.numel() for p in model.module.parameters())
    model.edits.append(prune_channels(model.module, torch.zeros(1, 1, size, size), Target("ratio", 0.5), round_to=4))
    assert sum(p.numel() for p in model.module.parameters()) < params
    x = calibration(model, 4)
    save_model(model, tmp_path)
    loaded = load_model(tmp_path).module
    with torch.no_grad():
        assert torch.equal(loaded(x), model.module.eval()(x))
    if name == "share":
        assert loaded.layer1[2].conv1 is loaded.layer1[0].conv1


def test_bn_refresh_gives_each_batchnorm_the_statistics_it_sees():
    """After a lossy transform, every BN from the first changed layer on holds the exact mean and
    variance of its input on the calibration data (in the model as saved); inserted BNs stay identities."""
    from edge_pipeline.compress.batchnorm import input_statistics

    model = build("vgg_small", 16)
    restructure(model, [("depthwise_separable", {"activation": "relu", "include": ["features.1*"]})])
    module, inputs = model.module.eval(), calibration(model)
    refreshed = [module.features[11], module.features[15], module.features[18]]  # the BNs after features.10
    untouched = module.features[1]
    for bn in refreshed:
        mean, var = input_statistics(module, bn, inputs, stop_early=True)
        assert torch.allclose(bn.running_mean, mean.float(), atol=1e-5) and torch.allclose(bn.running_var, var.float(), rtol=1e-4)
    mean, _ = input_statistics(module, untouched, inputs, stop_early=True)
    assert not torch.allclose(untouched.running_mean, mean.float(), atol=1e-3)  # before any change: left alone
    inserted = module.features[10][1]
    x = torch.randn(2, inserted.num_features, 4, 4)
    with torch.no_grad():
        assert torch.allclose(inserted(x), x, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# SVD initialization: the error falls as the rank grows, and full rank reproduces the layer


def _relative(new: torch.Tensor, old: torch.Tensor) -> float:
    return float((new - old).norm() / old.norm())


def _conv(cin=12, cout=10, k=3, stride=1, padding=1, bias=True) -> nn.Conv2d:
    torch.manual_seed(3)
    return nn.Conv2d(cin, cout, k, stride, padding, bias=bias).eval()


SVD_FAMILIES = {
    "low_rank-linear": (lambda: nn.Linear(20, 14).eval(), lambda m, r: low_rank_from(m, r, "svd"), 14, (6, 20)),
    "low_rank-conv": (lambda: _conv(stride=2), lambda m, r: low_rank_from(m, r, "svd"), 10, (4, 12, 9, 9)),
    "factorize": (lambda: _conv(), lambda m, r: factorized_kxk(m, r, "none", "svd"), 30, (4, 12, 9, 9)),
    # components per input channel: expansion = r, linear block (activation none); full = min(out, k*k) = 9
    "inverted_residual": (lambda: _conv(12, 12), lambda m, r: inverted_residual_from(m, r, "none", True, "svd"), 9, (4, 12, 9, 9)),
}


@pytest.mark.parametrize("family", sorted(SVD_FAMILIES))
def test_svd_error_falls_with_rank_and_full_rank_is_exact(family):
    make, replace, full, shape = SVD_FAMILIES[family]
    torch.manual_seed(4)
    layer = make()
    x = torch.randn(*shape)
    with torch.no_grad():
        reference = layer(x)
        errors = [_relative(replace(layer, r).eval()(x), reference) for r in range(1, full + 1)]
    assert all(b <= a + 1e-6 for a, b in zip(errors, errors[1:])), errors
    assert errors[0] > 0.1  # a random layer is far from rank 1
    assert errors[-1] < 1e-5


def test_separable_svd_is_the_rank1_approximation():
    conv = _conv(8, 6)
    new = separable_from(conv, "none", "svd").eval()
    dw, pw = new[0], new[1]
    kernel = pw.weight[:, :, 0, 0][:, :, None, None] * dw.weight[:, 0][None]  # out x in x k x k
    slices = conv.weight.detach().permute(1, 0, 2, 3).reshape(8, 6, 9)
    best = torch.stack([torch.linalg.matrix_norm(s - torch.linalg.svd(s)[0][:, :1] @ torch.diag(torch.linalg.svd(s)[1][:1])
                                                 @ torch.linalg.svd(s)[2][:1]) for s in slices])
    got = torch.linalg.matrix_norm((kernel - conv.weight).permute(1, 0, 2, 3).reshape(8, 6, 9))
    assert torch.allclose(got, best, atol=1e-5)


def test_inverted_residual_sign_split_is_exact_through_relu():
    """expansion 18 = 2 x k*k: every component gets a (+, -) channel pair, and relu(z) - relu(-z) = z."""
    conv = _conv(6, 6)
    block = inverted_residual_from(conv, 18, "relu", True, "svd").eval()
    from edge_pipeline.compress.batchnorm import calibrate_identity

    x = torch.rand(4, 6, 9, 9) * 3  # >= 0, as after a ReLU
    holder = nn.Sequential(block)
    calibrate_identity(holder, [m for m in block.modules() if isinstance(m, nn.BatchNorm2d)], x)
    with torch.no_grad():
        assert _relative(block(x), conv(x)) < 1e-5
    assert block.residual


# ---------------------------------------------------------------------------------------------
# The others' initializations


def test_channel_shuffle_is_shufflenets_permutation():
    x = torch.randn(2, 12, 3, 3)
    textbook = x.view(2, 3, 4, 3, 3).transpose(1, 2).reshape(2, 12, 3, 3)
    assert torch.equal(ChannelShuffle(12, 3)(x), textbook)
    assert sorted(shuffle_permutation(12, 3).tolist()) == list(range(12))


def test_grouped_fit_keeps_the_block_diagonal_exactly():
    conv = nn.Conv2d(8, 8, 1, bias=True).eval()
    new = grouped_from(conv, 2, "fit").eval()
    perm = new[1].perm
    # A weight that is block diagonal in the un-shuffled order is reproduced exactly.
    with torch.no_grad():
        w = conv.weight.view(8, 8).clone()
        unshuffled = torch.empty_like(w)
        unshuffled[perm] = w
        mask = torch.block_diag(torch.ones(4, 4), torch.ones(4, 4))
        w_block = torch.empty_like(w)
        w_block[:] = (unshuffled * mask)[perm]
        conv.weight.copy_(w_block.view(8, 8, 1, 1))
    new = grouped_from(conv, 2, "fit").eval()
    x = torch.randn(3, 8, 5, 5)
    with torch.no_grad():
        assert torch.allclose(new(x), conv(x), atol=1e-6)


def test_decompose_composition_and_fit():
    torch.manual_seed(5)
    conv = nn.Conv2d(6, 8, 5, padding=0, bias=False).eval()
    convs = stack_convs(conv, 6)
    x = torch.randn(2, 6, 12, 12)
    with torch.no_grad():  # the stack computes the conv with the composed kernel (no padding: exact)
        stacked = convs[1](convs[0](x))
        assert torch.allclose(stacked, nn.functional.conv2d(x, compose([c.weight for c in convs])), atol=1e-5)
    seven = nn.Conv2d(4, 6, 7, stride=2, padding=3, bias=True).eval()
    fitted, error = decomposed_from(seven, 4, "none", "fit")
    random_stack, _ = decomposed_from(seven, 4, "none", "random")
    with torch.no_grad():
        kernel = compose([c.weight for c in fitted])
        assert abs(_relative(kernel, seven.weight) - error) < 1e-5
        assert error < 0.9 * _relative(compose([c.weight for c in random_stack]), seven.weight)
        # stride on the last conv, padding split over the convs: same output shape, same interior
        y, ref = fitted(x[:, :4]), nn.functional.conv2d(x[:, :4], kernel, seven.bias, stride=2, padding=3)
        assert y.shape == seven(x[:, :4]).shape
        assert torch.allclose(y[..., 2:-2, 2:-2], ref[..., 2:-2, 2:-2], atol=1e-5)


def test_gap_head_inits():
    model = build("vgg_small", 16).module
    inputs = calibration(TrackedModel(model, BaseSpec("vgg_small", 10, 1, 16)), 64)
    with torch.no_grad():
        reference = model.classifier[1](model.classifier[0](model.features(inputs)))
    errors = {}
    for init in ("fit", "average", "random"):
        m = copy.deepcopy(model)
        torch.manual_seed(0)
        edit = gap_head(m, Selection(min_channels=1, skip_classifier=False), (1, 1, 16, 16), init, inputs)
        assert [op["path"] for op in edit.ops] == ["classifier.0", "classifier.1"]
        with torch.no_grad():
            errors[init] = _relative(m.classifier[1](m.classifier[0](m.features(inputs))), reference)
    assert errors["fit"] < errors["average"] < errors["random"]
    # average is exact when the map is spatially constant
    m = copy.deepcopy(model)
    gap_head(m, Selection(min_channels=1, skip_classifier=False), (1, 1, 16, 16), "average", inputs)
    flat = torch.randn(3, 64, 1, 1).expand(3, 64, 2, 2)
    with torch.no_grad():
        assert torch.allclose(m.classifier[1](m.classifier[0](flat)), model.classifier[1](model.classifier[0](flat)), atol=1e-5)


def test_share_groups_and_storage(tmp_path):
    model = build("resnet20", 8)
    assert find_groups(model.module, Selection()) == [
        ["layer1.0", "layer1.1", "layer1.2"], ["layer2.1", "layer2.2"], ["layer3.1", "layer3.2"]]
    save_model(model, tmp_path / "plain")
    restructure(model, [("share", {})])
    m = model.module
    assert m.layer1[2].conv1 is m.layer1[0].conv1 and m.layer1[2].bn1 is not m.layer1[0].bn1
    save_model(model, tmp_path / "shared")
    plain = (tmp_path / "plain" / "model.safetensors").stat().st_size
    shared = (tmp_path / "shared" / "model.safetensors").stat().st_size
    saved = sum(conv.weight.numel() * 4 for conv in (m.layer1[1].conv1, m.layer1[1].conv2, m.layer1[2].conv1, m.layer1[2].conv2,
                                                       m.layer2[2].conv1, m.layer2[2].conv2, m.layer3[2].conv1, m.layer3[2].conv2))
    assert plain - shared >= saved * 0.99  # the shared weights are stored once
    loaded = load_model(tmp_path / "shared").module
    assert loaded.layer3[2].conv2 is loaded.layer3[1].conv2


# ---------------------------------------------------------------------------------------------
# torchvision models: every transform either works or has nothing to do (already-separable
# layers are left alone); shapes kept, reload exact.

TORCHVISION = ["torchvision:resnet18", "torchvision:mobilenet_v2", pytest.param("torchvision:vgg11_bn", marks=pytest.mark.slow)]
NOTHING_TO_DO = {  # (arch, transform) pairs with no eligible layer, and why
    ("torchvision:resnet18", "decompose"): "only the (skipped) first conv is 7x7",
    ("torchvision:resnet18", "gap_head"): "already pools globally",
    ("torchvision:mobilenet_v2", "depthwise_separable"): "already separable",
    ("torchvision:mobilenet_v2", "factorize"): "no dense kxk conv besides the first",
    ("torchvision:mobilenet_v2", "decompose"): "no 5x5/7x7",
    ("torchvision:mobilenet_v2", "gap_head"): "already pools globally",
    ("torchvision:vgg11_bn", "decompose"): "3x3 only",
    ("torchvision:vgg11_bn", "grouped_pointwise"): "no 1x1 conv",
}


@pytest.mark.parametrize("arch", TORCHVISION)
def test_torchvision_models(arch, tmp_path):
    base = BaseSpec(arch, 10, 3, 32)
    torch.manual_seed(0)
    pristine = build_model(base).eval()
    inputs = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    for name in TRANSFORMS.names():
        module = copy.deepcopy(pristine)
        config = {"energy": 0.5} if name in ("low_rank", "factorize") else {}
        if name == "factorize":
            config["exclude"] = ["layer3*", "layer4*"]  # square 1536x1536 SVDs take seconds each; 8 layers suffice
        if name == "low_rank" and arch.endswith("vgg11_bn"):
            config["layers"] = ["conv"]  # the 25088x4096 FC's SVD alone takes a minute
        cfg = TRANSFORMS.get(name).Config.model_validate(config)
        edit, facts = apply_transform(module, name, cfg, inputs, (1, 3, 32, 32))
        if (arch, name) in NOTHING_TO_DO:
            assert not edit.ops, f"{arch} {name}: expected nothing to do ({NOTHING_TO_DO[arch, name]})"
            continue
        assert edit.ops, f"{arch} {name}: nothing replaced"
        assert facts["params_after"] < facts["params_before"] or name == "depthwise_separable"
        if arch.endswith("mobilenet_v2"):
            depthwise = [n for n, m in module.named_modules() if isinstance(m, nn.Conv2d) and m.groups == m.in_channels > 1]
            assert not any(op["path"] in depthwise for op in edit.ops), "depthwise convs must be left alone"
        with torch.no_grad():
            out = module(inputs[:2])
        assert out.shape == (2, 10)
        folder = tmp_path / name
        save_model(TrackedModel(module, base, [edit]), folder)
        with torch.no_grad():
            assert torch.equal(load_model(folder).module(inputs[:2]), out)


# ---------------------------------------------------------------------------------------------
# Export: float32 TFLite matches torch, and no layout TRANSPOSE (the shuffle is a GATHER)


@pytest.mark.slow  # one onnx2tf conversion per transform (~15 s each, TensorFlow import included)
@pytest.mark.parametrize("name", TRANSFORMS.names())
def test_exports_to_tflite(name, tmp_path):
    import numpy as np

    from edge_pipeline.convert.inspect import inspect_tflite
    from edge_pipeline.convert.nhwc import fold_flatten_linear
    from edge_pipeline.convert.onnx_export import export_onnx
    from edge_pipeline.convert.runtime import load_interpreter, run_tflite
    from edge_pipeline.convert.tflite_convert import convert_to_tflite

    arch, size, steps = EXAMPLES[name][0]
    model = build(arch, size)
    restructure(model, steps)
    module = model.module.eval()
    shape = (1, 1, size, size)
    exported, _ = fold_flatten_linear(module, shape)
    export_onnx(exported, shape, tmp_path / "model.onnx")
    samples = np.random.default_rng(0).random((20, size, size, 1), dtype=np.float32)
    files = convert_to_tflite(tmp_path / "model.onnx", tmp_path, ["float32"], samples, None)
    info = inspect_tflite(files["float32"])
    x = calibration(model, 8)
    with torch.no_grad():
        reference = module(x).numpy()
    got = run_tflite(load_interpreter(files["float32"]), [x.numpy().transpose(0, 2, 3, 1)])
    error = float(np.abs(got - reference).max() / np.abs(reference).max())
    assert error < 1e-4, f"{name}: TFLite float32 differs from torch by {error:.2e}; ops {info['ops']}"
    assert info["transposes"] == 0, info["ops"]
    assert not info["flex_ops"] and not info["custom_ops"]
    if any(isinstance(m, ChannelShuffle) for m in module.modules()):
        assert info["ops"].get("GATHER", 0) == sum(isinstance(m, ChannelShuffle) for m in module.modules())
