"""Safe persistence: a saved model reloads exactly; corrupt files give one clear error."""

from __future__ import annotations

import pytest
import torch

from edge_pipeline.artifacts import atomic_write_text
from edge_pipeline.compress.depthwise import depthwise_separable
from edge_pipeline.compress.pruning import Target, prune_channels
from edge_pipeline.compress.select import Selection
from edge_pipeline.errors import UserError
from edge_pipeline.models import BaseSpec, build_model
from edge_pipeline.models.store import STRUCTURE_FILE, WEIGHTS_FILE, TrackedModel, load_model, save_model


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


# -- tampered or damaged model folders (issue 11.8, 11.10): one UserError naming the file -----------


def _edit_structure(folder, change) -> None:
    import json

    data = json.loads((folder / STRUCTURE_FILE).read_text())
    change(data)
    (folder / STRUCTURE_FILE).write_text(json.dumps(data))


def _set(path, value):
    def change(data):
        node = data
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    return change


TAMPERED = [
    ("base not a mapping", _set(["base"], "vgg_small"), "base must be a mapping"),
    ("no base", lambda d: d.pop("base"), "missing key 'base'"),
    ("unknown arch", _set(["base", "arch"], "resnet9000"), "unknown model 'resnet9000'"),
    ("arch not a string", _set(["base", "arch"], 7), "arch must be a string, got 7"),
    ("extra base key", _set(["base", "depth"], 3), "unexpected keyword argument 'depth'"),
    ("a billion classes", _set(["base", "num_classes"], 10**9), "num_classes must be an integer in [2, 100000]"),
    ("string image size", _set(["base", "image_size"], "16"), "image_size must be an integer"),
    ("edits not a list", _set(["edits"], {"a": 1}), "cannot rebuild the model"),
    ("edit path missing", _set(["edits", 0, "ops", 0, "path"], "no.such.layer"), "cannot rebuild the model"),
    ("unknown module type", _set(["edits", 0, "ops", 0, "module"], {"type": "Transformer", "args": {}}),
     "unknown module type 'Transformer'"),
    ("unknown edit op", _set(["edits", 0, "ops", 0, "op"], "explode"), "unknown edit op 'explode'"),
    ("bad module args", _set(["edits", 0, "ops", 0, "module"], {"type": "Linear", "args": {"in_features": "x"}}),
     "cannot rebuild the model"),
    ("versions not a mapping", _set(["module_versions"], [1, 2]), "module_versions must map module names to integers"),
    ("meta not a mapping", _set(["meta"], [1]), "meta must be a mapping"),
]


@pytest.mark.parametrize("name,change,fragment", TAMPERED, ids=[t[0] for t in TAMPERED])
def test_tampered_structure_is_one_error_naming_the_file(tmp_path, edited_model, name, change, fragment):
    save_model(edited_model, tmp_path)
    _edit_structure(tmp_path, change)
    with pytest.raises(UserError) as info:
        load_model(tmp_path)
    message = str(info.value)
    assert message.startswith(f"{tmp_path / STRUCTURE_FILE}: ") and fragment in message, message
    assert len(message.splitlines()) == 1


def test_a_huge_module_in_the_structure_is_refused_before_allocating(tmp_path, edited_model):
    """Linear(10**6, 10**6) would be 4 TB: refused by comparing with the weights file's size."""
    save_model(edited_model, tmp_path)
    huge = {"type": "Linear", "args": {"in_features": 10**6, "out_features": 10**6, "bias": True}}
    _edit_structure(tmp_path, _set(["edits", 0, "ops", 0, "module"], huge))
    with pytest.raises(UserError, match=r"model.safetensors: \d+ bytes, too small for the 10000010\d{5} values structure.json describes"):
        load_model(tmp_path)


def test_nan_in_saved_weights_names_the_tensor(tmp_path, edited_model):
    from safetensors.torch import load_file, save_file

    save_model(edited_model, tmp_path)
    state = load_file(str(tmp_path / WEIGHTS_FILE))
    name = sorted(state)[3]
    state[name] = state[name].clone()
    state[name].view(-1)[0] = float("nan")
    save_file(state, str(tmp_path / WEIGHTS_FILE))
    with pytest.raises(UserError) as info:
        load_model(tmp_path)
    assert str(info.value).startswith(f"{tmp_path / WEIGHTS_FILE}: tensor {name!r} has NaN values")


def test_unexpected_tensor_in_saved_weights(tmp_path, edited_model):
    from safetensors.torch import load_file, save_file

    save_model(edited_model, tmp_path)
    state = load_file(str(tmp_path / WEIGHTS_FILE))
    state["extra.weight"] = torch.zeros(2)
    save_file(state, str(tmp_path / WEIGHTS_FILE))
    with pytest.raises(UserError, match="weights do not match structure.json .*1 unexpected, e.g. extra.weight"):
        load_model(tmp_path)


@pytest.mark.e2e
@pytest.mark.slow
def test_tampered_teacher_folder_is_exit_2_naming_it(tmp_path, edited_model, capsys):
    """The finetune stage's teacher loading path: `run` stops with one line naming structure.json."""
    from edge_pipeline.cli import main
    from tests.conftest import TINY_HEAD, write

    teacher = tmp_path / "teacher"
    save_model(edited_model, teacher)
    _edit_structure(teacher, _set(["base", "num_classes"], "ten"))
    recipe = write(tmp_path / "r.yaml", TINY_HEAD + "stages:\n  - train: {epochs: 1}\n"
                   f"  - finetune: {{epochs: 1, distill: {{teacher: {teacher}}}}}\n")
    assert main(["run", str(recipe), "--out", str(tmp_path / "run")]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:") or "Traceback" in line]
    assert len(err) == 1 and err[0].startswith(f"error: {teacher / STRUCTURE_FILE}: cannot rebuild the model"), err
