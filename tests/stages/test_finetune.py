"""The finetune stage: distillation config, teacher from a stage or a saved folder, and TinyBERT's
two phases as two named stages."""

from __future__ import annotations

import json

import pytest

from edge_pipeline.cli import main
from edge_pipeline.errors import UserError
from edge_pipeline.recipe import parse_recipe

from ..conftest import write

HEAD = """\
name: ft-test
seed: 0
data: {dataset: digits, image_size: 16, batch_size: 32, limit: 500}
model: {arch: resnet8, width: 0.5}
"""


def test_objective_follows_from_features_and_contradictions_are_errors():
    stages = parse_recipe(HEAD + """\
stages:
  - train: {}
  - finetune: {name: a, distill: {teacher: train}}
  - finetune: {name: b, distill: {teacher: train, features: {loss: cosine}}}
  - finetune: {name: c, distill: {teacher: train, objective: features}}
""", "r.yaml").stages
    assert stages[1].config.distill.objective == "logits" and stages[1].config.distill.features is None
    assert stages[2].config.distill.objective == "logits+features" and stages[2].config.distill.features.loss == "cosine"
    assert stages[3].config.distill.features.layers == "auto"
    with pytest.raises(UserError, match=r"r.yaml:7: stages\[1\].finetune.distill: `features` is set but objective is logits"):
        parse_recipe(HEAD + "stages:\n  - train: {}\n"
                     "  - finetune: {distill: {teacher: train, objective: logits, features: {}}}\n", "r.yaml")


def test_teacher_must_be_an_earlier_stage_or_a_saved_model(tmp_path):
    with pytest.raises(UserError, match=r"distill.teacher: 'nowhere' is not an earlier model stage \(train\) nor a folder"):
        parse_recipe(HEAD + "stages:\n  - train: {}\n  - finetune: {distill: {teacher: nowhere}}\n", "r.yaml")


@pytest.fixture(scope="module")
def two_phase(tmp_path_factory):
    root = tmp_path_factory.mktemp("tinybert")
    recipe = write(root / "r.yaml", HEAD + """\
stages:
  - train: {epochs: 8, lr: 0.05}
  - prune: {method: l1, target_macs: 0.5}
  - finetune: {name: distill_features, epochs: 2, lr: 0.01,
               distill: {teacher: train, objective: features, features: {layers: auto, loss: mse}}}
  - finetune: {name: distill_task, epochs: 2, lr: 0.01, distill: {teacher: train, temperature: 4, alpha: 0.7}}
""")
    assert main(["run", str(recipe), "--out", str(root / "run")]) == 0
    return root


def test_two_phase_distillation_runs_features_then_logits(two_phase):
    run = two_phase / "run"
    phase1 = json.loads((run / "03-distill_features" / "details.json").read_text())
    phase2 = json.loads((run / "04-distill_task" / "details.json").read_text())
    assert phase1["objective"] == "features" and set(phase1["final_terms"]) == {"feature_mse"}
    assert phase1["feature_pairs"] == [["layer1", "layer1"], ["layer2", "layer2"], ["layer3", "layer3"], ["pool", "pool"]]
    assert phase1["adapters"] == ["Conv2d"] * 4  # the pruned student has half the channels
    assert set(phase2["final_terms"]) == {"kd", "ce"}
    metrics = {s["name"]: s["model"] for s in json.loads((run / "metrics.json").read_text())["stages"]}
    assert metrics["distill_task"]["accuracy"] > metrics["prune"]["accuracy"]


def test_teacher_from_a_saved_model_folder(two_phase, tmp_path):
    teacher = two_phase / "run" / "01-train"
    recipe = write(tmp_path / "r.yaml", HEAD + f"""\
stages:
  - train: {{epochs: 1}}
  - finetune: {{epochs: 1, distill: {{teacher: "{teacher}", features: {{loss: cosine}}}}}}
""")
    assert main(["run", str(recipe), "--out", str(tmp_path / "run")]) == 0
    details = json.loads((tmp_path / "run" / "02-finetune" / "details.json").read_text())
    assert details["teacher_folder"] == str(teacher)
    assert set(details["final_terms"]) == {"kd", "ce", "feature_cosine"}
