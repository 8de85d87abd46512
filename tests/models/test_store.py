"""Safe persistence: a saved model reloads exactly; corrupt files give one clear error."""

from __future__ import annotations

import pytest
import torch

from edge_pipeline.artifacts import atomic_write_text
from edge_pipeline.models.store import STRUCTURE_FILE, WEIGHTS_FILE, TrackedModel, load_model, save_model
from edge_pipeline.compress.depthwise import depthwise_separable
from edge_pipeline.compress.pruning import Target, prune_channels
from edge_pipeline.compress.select import Selection
from edge_pipeline.errors import UserError
from edge_pipeline.models import BaseSpec, build_model


@pytest.fixture
def edited_model():
    base = BaseSpec("vgg_small", 10, 1, 16, 0.5)
    torch.manual_seed(0)
    module = build_model(base).eval()
    model = TrackedModel(module, base, meta={"class_names": list("0123456789")})
    model.edits.append(depthwise_separable(module, Selection(min_channels=8)))
    model.edits.append(prune_channels(module, torch.zeros(1, 1, 16, 16), Target("ratio", 0.5), round_to=4))
    return model


def test_save_and_load_reproduce_outputs(tmp_path, edited_model):
    save_model(edited_model, tmp_path)
    loaded = load_model(tmp_path)
    x = torch.randn(3, 1, 16, 16)
    assert torch.equal(edited_model.module(x), loaded.module(x))
    assert loaded.meta["class_names"][0] == "0"
    assert [e.transform for e in loaded.edits] == ["depthwise_separable", "prune"]


def test_no_pickle_in_saved_files(tmp_path, edited_model):
    save_model(edited_model, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [WEIGHTS_FILE, STRUCTURE_FILE]
    assert (tmp_path / STRUCTURE_FILE).read_text().lstrip().startswith("{")


@pytest.mark.parametrize("damage", ["truncate", "garbage", "delete"])
def test_corrupt_weights_are_a_clear_error(tmp_path, edited_model, damage):
    save_model(edited_model, tmp_path)
    weights = tmp_path / WEIGHTS_FILE
    if damage == "truncate":
        weights.write_bytes(weights.read_bytes()[:1000])
    elif damage == "garbage":
        weights.write_bytes(b"\x00" * 64)
    else:
        weights.unlink()
    with pytest.raises(UserError) as info:
        load_model(tmp_path)
    assert str(weights) in str(info.value)


def test_corrupt_structure_is_a_clear_error(tmp_path, edited_model):
    save_model(edited_model, tmp_path)
    atomic_write_text(tmp_path / STRUCTURE_FILE, '{"format": 1, "base": {"arch": "vgg_small"')
    with pytest.raises(UserError, match="not valid JSON"):
        load_model(tmp_path)


def test_structure_that_does_not_match_weights(tmp_path, edited_model):
    save_model(edited_model, tmp_path)
    import json

    data = json.loads((tmp_path / STRUCTURE_FILE).read_text())
    data["edits"] = data["edits"][:1]  # forget the pruning: shapes no longer match
    (tmp_path / STRUCTURE_FILE).write_text(json.dumps(data))
    with pytest.raises(UserError, match="does not match structure.json"):
        load_model(tmp_path)
