"""Quantization-aware training's parametrization: the tensor trained is the BatchNorm-folded weight."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edge_pipeline.compress.int8sim import fold_factors
from edge_pipeline.compress.qat import QuantAware


def conv_bn_net(spread: float) -> nn.Module:
    """Conv -> BatchNorm -> ReLU -> Linear, with the conv's weights (and the statistics they produce)
    divided by `spread`: the same function for every spread, a BatchNorm fold factor `spread` times larger."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4, eps=1e-12), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    with torch.no_grad():
        net[1].running_mean.uniform_(-0.2, 0.2)
        net[1].running_var.uniform_(0.5, 2.0)
        net[1].weight.uniform_(0.5, 1.5)
        net[0].weight.div_(spread)
        net[1].running_mean.div_(spread)
        net[1].running_var.div_(spread**2)
    return net.eval()


def one_qat_step(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The conv's folded weight after one plain SGD step under fake quantization."""
    factor = fold_factors(net)["0"].view(-1, 1, 1, 1)
    aware = QuantAware(net, x, per_channel=True)
    with aware.attached():
        net.train()
        optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
        nn.functional.cross_entropy(net(x), y).backward()
        optimizer.step()
    return net[0].weight.detach() * factor


@pytest.mark.parametrize("spread", [10.0, 1000.0])
def test_a_step_moves_the_folded_network_alike_whatever_the_fold_factor(spread):
    """With BatchNorm frozen, a step on the raw weight moves the normalized output factor^2 times as
    much (mobilenet_v3_small's depthwise convs fold with factors up to 31: QAT's loss went to nan):
    QAT trains the folded weight, so the folded networks take the same step."""
    x, y = torch.randn(16, 3, 8, 8), torch.randint(0, 3, (16,))
    reference, scaled = conv_bn_net(1.0), conv_bn_net(spread)
    assert torch.allclose(reference(x), scaled(x), atol=1e-4)  # the same function
    before = reference[0].weight.detach() * fold_factors(reference)["0"].view(-1, 1, 1, 1)
    after_reference, after_scaled = one_qat_step(reference, x, y), one_qat_step(scaled, x, y)
    step = (after_reference - before).abs().max()
    assert step > 1e-4  # the step did something
    assert torch.allclose(after_scaled, after_reference, atol=1e-3 * float(before.abs().max()))
