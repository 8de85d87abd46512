"""The early_exit stage: recipe checks, and a run on real data (no export): branches attached,
the backbone untouched by self-distillation, the threshold chosen on val and reported on test."""

from __future__ import annotations

import json

import pytest

from edge_pipeline.cli import main
from edge_pipeline.errors import UserError
from edge_pipeline.recipe import parse_recipe

from ..conftest import write

HEAD = """\
name: ee-test
seed: 0
data: {dataset: digits, image_size: 16, batch_size: 64}
model: {arch: vgg_small, width: 0.5}
"""


def test_defaults_and_bad_values_are_one_line_errors():
    stages = parse_recipe(HEAD + "stages:\n  - train: {}\n  - early_exit: {}\n", "r.yaml").stages
    cfg = stages[1].config
    assert (cfg.at, cfg.joint, cfg.measure, cfg.max_accuracy_drop, cfg.pool_size) == ("auto", False, "entropy", 0.005, 2)
    with pytest.raises(UserError, match=r"r.yaml:7: stages\[1\].early_exit.measure: must be one of"):
        parse_recipe(HEAD + "stages:\n  - train: {}\n  - early_exit: {measure: margin}\n", "r.yaml")
    with pytest.raises(UserError, match=r"stages\[1\].early_exit: unknown key 'treshold'|treshold"):
        parse_recipe(HEAD + "stages:\n  - train: {}\n  - early_exit: {treshold: 0.2}\n", "r.yaml")


def test_early_exit_needs_a_model_and_comes_once():
    with pytest.raises(UserError, match="early_exit"):
        parse_recipe(HEAD + "stages:\n  - early_exit: {}\n", "r.yaml")
    with pytest.raises(UserError, match="keep one early_exit stage"):
        parse_recipe(HEAD + "stages:\n  - train: {}\n  - early_exit: {}\n  - early_exit: {name: again}\n", "r.yaml")


def test_a_cut_inside_a_residual_block_is_a_user_error(tmp_path, capsys):
    recipe = write(tmp_path / "r.yaml", HEAD.replace("vgg_small", "resnet8") + """\
stages:
  - train: {epochs: 0}
  - early_exit: {epochs: 0, at: [layer1.0.conv1]}
""")
    assert main(["run", str(recipe), "--out", str(tmp_path / "run")]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: stages[1].early_exit.at: 'layer1.0.conv1': more than one tensor crosses")
    assert "layer1.0.relu2" in errors[0]  # the valid cut points are named


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("early-exit")
    recipe = write(root / "r.yaml", HEAD + """\
stages:
  - train: {epochs: 3, lr: 0.05}
  - early_exit: {epochs: 2}
""")
    out = root / "run"
    assert main(["run", str(recipe), "--out", str(out)]) == 0
    return out


def test_self_distillation_keeps_the_model_and_adds_exits(run):
    from edge_pipeline.models.exit_branches import exits_of
    from edge_pipeline.models.store import load_model

    metrics = json.loads((run / "metrics.json").read_text())
    train, early = (s["model"] for s in metrics["stages"])
    assert early["accuracy"] == train["accuracy"]  # the backbone and final classifier are frozen
    assert early["macs"] == train["macs"] and early["params"] > train["params"]  # forward unchanged; branches counted
    model = load_model(run / "02-early_exit")
    assert exits_of(model.module).cuts == ["features_6", "features_13"]
    assert model.meta["early_exit"]["measure"] == "entropy"


def test_threshold_is_chosen_on_val_within_the_drop_and_reported_on_test(run):
    details = json.loads((run / "02-early_exit" / "details.json").read_text())
    val, test = details["val"], details["test"]
    assert val["accuracy"] >= val["reference_accuracy"] - 0.005 - 1e-9
    assert sum(test["exit_counts"]) == 270 and len(test["exit_counts"]) == 3
    assert details["threshold"] == val["threshold"] == test["threshold"] and details["threshold"] in details["grid"]
    assert details["plain_macs"] < details["worst_case_macs"]
    assert test["macs_ratio"] == pytest.approx(test["expected_macs"] / details["plain_macs"], rel=1e-3)
    assert [e["index"] for e in details["exits"]] == [0, 1, 2]
    assert details["exits"][0]["macs"] < details["exits"][1]["macs"] < details["exits"][2]["macs"] == details["worst_case_macs"]
    assert details["other_measure"]["measure"] == "max_softmax"
    curve = details["test_curve"]
    assert curve[0]["exit_counts"] == [0, 0, 270]  # threshold 0: no early exit
    assert curve[-1]["exit_counts"][0] == 270  # the top of the grid: every input leaves at the first exit
