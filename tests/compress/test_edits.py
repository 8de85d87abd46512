"""Structure as data: module specs round-trip, and replaying edits rebuilds the same architecture."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edge_pipeline.models import BaseSpec, build_model
from edge_pipeline.models.edits import Edit, replay
from edge_pipeline.models.modspec import build_module, module_spec

MODULES = [
    nn.Conv2d(4, 8, 3, stride=2, padding=1, dilation=1, groups=2, bias=False),
    nn.Conv2d(3, 6, (1, 5), padding="same"),
    nn.Linear(5, 3),
    nn.BatchNorm2d(7, eps=1e-3, momentum=0.2),
    nn.Sequential(nn.Conv2d(2, 2, 3, groups=2), nn.BatchNorm2d(2), nn.ReLU6(), nn.Conv2d(2, 4, 1)),
    nn.Hardswish(),
    nn.AdaptiveAvgPool2d(1),
]


@pytest.mark.parametrize("module", MODULES, ids=lambda m: type(m).__name__)
def test_spec_round_trip(module):
    rebuilt = build_module(module_spec(module))
    assert module_spec(rebuilt) == module_spec(module)
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in module.state_dict().items()}


def test_unknown_module_type_is_refused():
    class Custom(nn.Module):
        pass

    with pytest.raises(TypeError, match="register it with @buildable"):
        module_spec(Custom())


def test_replay_rebuilds_replacements_and_sharing():
    base = BaseSpec("resnet20", 10, 1, 16)
    model = build_model(base)
    edit = Edit("test")
    edit.replace(model, "layer1.0.conv1", nn.Sequential(nn.Conv2d(16, 16, 3, 1, 1, groups=16), nn.Conv2d(16, 16, 1)))
    edit.share(model, "layer1.2", "layer1.1")
    rebuilt = replay(build_model(base), [Edit.from_dict(edit.to_dict())])
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    assert rebuilt.layer1[2] is rebuilt.layer1[1]
    x = torch.randn(2, 1, 16, 16)
    assert torch.equal(model.eval()(x), rebuilt.eval()(x))
