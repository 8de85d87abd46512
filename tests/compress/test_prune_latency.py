"""Latency targets in the pruning engine: a per-layer latency function prices every decision, the
global allocation buys the most milliseconds per unit of importance, the target is met in that model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edge_pipeline.compress.pruning import Target, prune_channels
from edge_pipeline.errors import UserError

X = torch.zeros(1, 1, 16, 16)


def net() -> nn.Module:
    """Two prunable convs whose filters are equally important (same L1 norm everywhere)."""
    model = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(16, 4, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.fill_(0.1)
                m.bias.zero_()
    return model


def latency(per_channel: dict[str, float]):
    """ms of a layer = its price per output channel x kept outputs."""
    def fn(path: str, kin: int, kout: int) -> float:
        return per_channel[path] * kout
    return fn


def widths(model) -> dict[str, int]:
    return {n: m.out_channels for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}


def test_a_latency_target_takes_channels_where_they_buy_the_most_time():
    """conv 0's filters are 16x less important (L1 0.9 vs 14.4) but conv 2's cost 100x more per channel:
    importance per millisecond says conv 2; plain importance (a channel-ratio target) says conv 0."""
    fn = latency({"0": 0.01, "2": 1.0, "4": 0.0})
    base = 16 * 0.01 + 16 * 1.0
    model = net()
    edit = prune_channels(model, X, Target("latency", 0.5 * base + 0.2), allocation="global", latency=(fn, 0.2))
    after = widths(model)
    assert after["0"] == 16 and after["2"] <= 8  # only the costly layer gave up channels
    before_ms, after_ms = edit.summary["latency_ms"]
    assert before_ms == pytest.approx(base + 0.2)
    assert after_ms <= 0.5 * base + 0.2 + 1e-9
    by_importance = net()
    prune_channels(by_importance, X, Target("ratio", (32 - after["0"] - after["2"]) / 36), allocation="global")
    assert widths(by_importance)["0"] < 16 and widths(by_importance)["2"] == 16


def test_a_latency_target_out_of_reach_names_the_milliseconds_left():
    fn = latency({"0": 0.01, "2": 0.1, "4": 0.0})
    with pytest.raises(UserError, match=r"predicted latency at most 0\.001 ms is out of reach.*ms predicted"):
        prune_channels(net(), X, Target("latency", 0.001), allocation="global", latency=(fn, 0.5))


def test_a_latency_target_without_a_latency_model_is_a_programming_error():
    with pytest.raises(ValueError, match="latency model"):
        prune_channels(net(), X, Target("latency", 1.0))


@pytest.mark.parametrize("allocation", ["global", "per_layer"])
def test_channels_stay_multiples_of_round_to_under_a_latency_target(allocation):
    fn = latency({"0": 0.01, "2": 0.1, "4": 0.0})
    model = net()
    prune_channels(model, X, Target("latency", 0.8), allocation=allocation, round_to=4, latency=(fn, 0.0))
    assert all(w % 4 == 0 for w in widths(model).values())


def test_steps_that_buy_no_time_are_taken_last():
    """Inside a kernel tile (here: 8 channels) removing channels saves nothing: a step reaches down to
    the next whole tile, and tiles are bought where they are cheapest in importance per ms."""
    def tiled(path: str, kin: int, kout: int) -> float:
        tiles = -(-kout // 8)
        return {"0": 0.05, "2": 5.0, "4": 0.0}[path] * tiles
    model = net()
    prune_channels(model, X, Target("latency", 5.2), allocation="global", latency=(tiled, 0.0))
    assert widths(model) == {"0": 16, "2": 8, "4": 4}  # one whole tile of conv 2, nothing scattered
