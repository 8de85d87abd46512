"""Cross-layer equalization, high-bias absorption, bias correction and the int8 simulation
(`compress/equalize.py`, `bias_correction.py`, `int8sim.py`, `prepare_int8.py`)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from edge_pipeline.compress.bias_correction import correct_biases
from edge_pipeline.compress.equalize import absorb_high_biases, equalize, find_pairs, input_ranges, output_ranges
from edge_pipeline.compress.int8sim import fold_factors, quantized_weight, simulated
from edge_pipeline.compress.prepare_int8 import prepare_for_int8
from edge_pipeline.errors import PipelineError
from edge_pipeline.models import ZOO, BaseSpec, build_model
from edge_pipeline.models.store import TrackedModel, load_model, save_model


class Mixed(nn.Module):
    """Every pair kind: conv -> BN -> ReLU -> depthwise, depthwise -> BN -> LeakyReLU -> grouped 1x1,
    grouped -> PReLU -> 1x1, then Linear -> ReLU -> Linear; and one ReLU6 pair that must be skipped."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.b1, self.a1 = nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU()
        self.dw, self.b2, self.a2 = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False), nn.BatchNorm2d(8), nn.LeakyReLU(0.1)
        self.g, self.a3 = nn.Conv2d(8, 8, 1, groups=2), nn.PReLU()
        self.pw, self.b4, self.a4 = nn.Conv2d(8, 6, 1, bias=False), nn.BatchNorm2d(6), nn.ReLU6()
        self.last = nn.Conv2d(6, 6, 1)
        self.fc1, self.fc2 = nn.Linear(6, 12), nn.Linear(12, 5)

    def forward(self, x):
        x = self.a2(self.b2(self.dw(self.a1(self.b1(self.c1(x))))))
        x = self.last(self.a4(self.b4(self.pw(self.a3(self.g(x))))))
        return self.fc2(torch.relu(self.fc1(x.mean((2, 3)))))


def settled(model: nn.Module, channels: int = 3, size: int = 16) -> nn.Module:
    """Non-trivial BatchNorm statistics and affine parameters, then eval mode."""
    torch.manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            nn.init.uniform_(m.weight, 0.2, 2.0)
            nn.init.uniform_(m.bias, -0.5, 1.0)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(16, channels, size, size))
    return model.eval()


def models():
    """(a settled model, its input size): every zoo architecture, the mixed pairs, a torchvision one."""
    yield pytest.param(lambda: settled(Mixed()), 16, id="mixed")
    for arch in ZOO:
        yield pytest.param(lambda arch=arch: settled(build_model(BaseSpec(arch, 10, 3, 16))), 16, id=arch)
    yield pytest.param(lambda: settled(build_model(BaseSpec("torchvision:mobilenet_v2", 10, 3, 32)), size=32), 32, id="mobilenet_v2")


@pytest.mark.parametrize("make, size", list(models()))
def test_equalization_keeps_the_function(make, size):
    model = make()
    x = torch.randn(8, 3, size, size)
    with torch.no_grad():
        reference = model(x)
        equalize(model)
        assert torch.allclose(model(x), reference, rtol=1e-4, atol=1e-5 * float(reference.abs().max()))


def test_the_pairs_found_and_the_reasons_for_the_rest():
    pairs, skipped = find_pairs(settled(Mixed()))
    assert [(p.first, p.norm, p.second) for p in pairs] == [
        ("c1", "b1", "dw"), ("dw", "b2", "g"), ("g", None, "pw"), ("fc1", None, "fc2")]
    assert [p.activation for p in pairs] == ["ReLU", "LeakyReLU", "PReLU", "relu"]
    assert {"layer": "pw", "reason": "a4 (ReLU6) is not scale-equivariant"} in skipped


def test_equalized_pairs_have_matching_channel_ranges():
    model = settled(Mixed())
    modules = dict(model.named_modules())
    equalize(model, max_iterations=200, tolerance=1e-6)
    for p in find_pairs(model)[0]:
        r1 = output_ranges(modules[p.first], modules.get(p.norm) if p.norm else None)
        r2 = input_ranges(modules[p.second])
        assert torch.allclose(r1, r2, rtol=1e-3), p


def broken(model: nn.Module, first_norm: str, second: str, factor: float = 1000.0) -> nn.Module:
    """The same function, but channel 0 after `first_norm` is `factor` times wider (the issue's case:
    a trained network whose channel scales were changed without changing what it computes)."""
    modules = dict(model.named_modules())
    with torch.no_grad():
        modules[first_norm].weight[0] *= factor
        modules[first_norm].bias[0] *= factor
        modules[second].weight[:, 0] /= factor
    return model


def logit_error(model: nn.Module, x: torch.Tensor, per_channel: bool) -> float:
    with torch.no_grad():
        reference = model(x)
        with simulated(model, x, per_channel) as quantized:
            return float((quantized(x) - reference).pow(2).mean() / reference.pow(2).mean())


@pytest.mark.parametrize("per_channel", [True, False])
def test_equalization_repairs_a_channel_range_int8_cannot_hold(per_channel):
    model = broken(settled(build_model(BaseSpec("vgg_small", 10, 3, 16))), "features.1", "features.3")
    x = torch.randn(64, 3, 16, 16)
    before = logit_error(model, x, per_channel)
    equalize(model)
    after = logit_error(model, x, per_channel)
    assert after < before / 20, (before, after)


def test_high_bias_absorption_is_exact_where_the_relu_never_clips_and_narrows_the_activation():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1, bias=False),
                          nn.BatchNorm2d(2), nn.ReLU(), nn.Conv2d(2, 2, 3, padding=1)).eval()
    with torch.no_grad():
        model[1].weight.fill_(0.5)
        model[1].bias.fill_(5.0)   # pre-activation ~N(5, 0.5): c = 5 - 1.5 = 3.5 is never clipped
        model[4].weight.fill_(0.5)
        model[4].bias.fill_(5.0)   # absorbable, but into a padded 3x3 conv: refused
    x = torch.randn(4, 3, 8, 8) * 0.01
    with torch.no_grad():
        reference, peak = model(x), float(model[:3](x).max())
        absorbed = absorb_high_biases(model, find_pairs(model)[0])
        assert [a["layer"] for a in absorbed] == ["1"]
        assert torch.allclose(model(x), reference, rtol=1e-4, atol=1e-4)
        assert float(model[:3](x).max()) < peak - 3.0
        assert float(model[4].bias[0]) == 5.0


def test_quantized_weights_sit_on_the_converters_grid_with_the_batchnorm_folded():
    model = settled(Mixed())
    factors = fold_factors(model)
    assert torch.equal(factors["last"], torch.ones(6)) and not torch.equal(factors["c1"], torch.ones(8))
    for per_channel in (True, False):
        w = model.c1.weight
        folded = quantized_weight(w, factors["c1"], per_channel) * factors["c1"].view(-1, 1, 1, 1)
        peak = (w * factors["c1"].view(-1, 1, 1, 1)).flatten(1).abs().amax(1).view(-1, 1, 1, 1)
        scale = peak / 127 if per_channel else peak.max() / 127
        steps = folded / scale
        assert torch.allclose(steps, steps.round(), atol=1e-3) and steps.abs().max() <= 127 + 1e-3


def test_bias_correction_removes_the_mean_shift_of_int8_weights():
    model = settled(build_model(BaseSpec("resnet8", 10, 3, 16)))
    x = torch.randn(256, 3, 16, 16)
    with torch.no_grad():
        reference = model(x)  # the float model as it came: what the int8 file must reproduce

    def mean_shift(m: nn.Module) -> float:
        """|mean over inputs of (int8-weight logits - float logits)|, averaged over the classes."""
        factors = fold_factors(m)
        q = copy.deepcopy(m)
        with torch.no_grad():
            for name, module in q.named_modules():
                if name in factors:
                    module.weight.copy_(quantized_weight(module.weight, factors[name], per_channel=False))
            return float((q(x) - reference).mean(0).abs().mean())

    before = mean_shift(model)
    result = correct_biases(model, x, per_channel=False)
    assert result["corrected"] and not result["skipped"] and result["samples"] == 256
    assert mean_shift(model) < before / 2


def test_a_model_fx_cannot_trace_is_refused_naming_the_option():
    class Dynamic(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 1)

        def forward(self, x):
            return self.conv(x) if x.sum() > 0 else x

    with pytest.raises(PipelineError, match=r"quantize\.equalize: torch\.fx cannot trace this model"):
        equalize(Dynamic())


def test_prepare_records_each_method_and_the_relu6_edit_survives_a_reload(tmp_path):
    spec = BaseSpec("torchvision:mobilenet_v2", 4, 3, 32)
    torch.manual_seed(0)
    tracked = TrackedModel(settled(build_model(spec), size=32), spec)
    x, y = torch.randn(32, 3, 32, 32), torch.randint(0, 4, (32,))
    prepared, steps = prepare_for_int8(tracked, equalize_pairs=True, relu6_to_relu=True, bias_correction="empirical",
                                       calibration=x, test_loader=lambda: [(x, y)], per_channel=False)
    assert [s["method"] for s in steps] == ["ptq", "relu6_to_relu", "equalize", "bias_correction"]
    assert steps[1]["replaced"] == 35 and len(steps[2]["pairs"]) > len(find_pairs(tracked.module)[0])
    assert not any(isinstance(m, nn.ReLU6) for m in prepared.module.modules())
    assert any(isinstance(m, nn.ReLU6) for m in tracked.module.modules())  # the input is left alone
    save_model(prepared, tmp_path)
    reloaded = load_model(tmp_path).module.eval()
    with torch.no_grad():
        assert torch.equal(reloaded(x), prepared.module(x))


def test_adaround_beats_nearest_rounding_and_leaves_weights_on_the_grid():
    from edge_pipeline.compress.adaround import adaround, grid

    model = settled(build_model(BaseSpec("resnet8", 10, 3, 16)))
    x = torch.randn(128, 3, 16, 16)
    result = adaround(model, x, per_channel=True, iterations=200)
    assert len(result["layers"]) == len(fold_factors(model))
    assert all(lay["error_adaround"] <= lay["error_nearest"] for lay in result["layers"])
    assert result["mean_error_ratio"] > 1.0 and any(lay["flipped"] > 0 for lay in result["layers"])
    factors = fold_factors(model)
    for name, module in model.named_modules():
        if name in factors:
            folded = module.weight.detach() * factors[name].view(-1, *[1] * (module.weight.dim() - 1))
            steps = folded / grid(folded, per_channel=True)
            assert torch.allclose(steps, steps.round(), atol=1e-3), name  # on the grid...
            assert torch.allclose(steps.flatten(1).abs().amax(1), torch.full((steps.shape[0],), 127.0), atol=1e-3)  # ...of the same scale


def test_analytic_bias_correction_agrees_with_the_measured_shift_where_its_model_holds():
    from edge_pipeline.compress.bias_correction import correct_biases_analytic

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16, momentum=None), nn.ReLU(),
                          nn.Conv2d(16, 8, 1))
    with torch.no_grad():
        nn.init.uniform_(model[1].weight, 0.5, 2.0)
        nn.init.uniform_(model[1].bias, -1.0, 1.0)
    x = torch.randn(512, 3, 8, 8)
    model.train()
    with torch.no_grad():
        model(x)  # cumulative statistics of exactly this data: BatchNorm's output is ~N(beta, gamma^2)
    model.eval()
    measured, derived = copy.deepcopy(model), copy.deepcopy(model)
    empirical = correct_biases(measured, x, per_channel=False)
    analytic = correct_biases_analytic(derived, per_channel=False)
    assert [c["layer"] for c in analytic["corrected"]] == ["3"] and analytic["skipped"] == ["0"]
    assert {c["layer"] for c in empirical["corrected"]} == {"0", "3"}
    shift_measured = (measured[3].bias - model[3].bias).detach()
    shift_derived = (derived[3].bias - model[3].bias).detach()
    assert float(torch.nn.functional.cosine_similarity(shift_measured, shift_derived, dim=0)) > 0.95
