"""The prune stage: its recipe schema, rounds with fine-tuning, taylor in a pipeline, magnitude
sparsity that fine-tuning keeps, and Network Slimming's BatchNorm penalty."""

from __future__ import annotations

import json

import pytest
import torch

from edge_pipeline.cli import main
from edge_pipeline.errors import UserError
from edge_pipeline.models.store import load_model
from edge_pipeline.recipe import parse_recipe

from ..conftest import write

HEAD = """\
name: prune-test
seed: 0
data: {dataset: digits, image_size: 16, batch_size: 32, limit: 300}
model: {arch: vgg_small, width: 0.5}
"""


def recipe_with(stage: str) -> str:
    return HEAD + "stages:\n  - train: {epochs: 1}\n  - prune: " + stage + "\n"


@pytest.mark.parametrize("body,message", [
    ("{ratio: 0.5, target_macs: 0.5}", "give one of ratio, target_macs, target_params"),
    ("{method: l1, sparsity: 0.5}", "`sparsity` is for method magnitude"),
    ("{method: magnitude, target_macs: 0.5}", "method magnitude takes `sparsity`, not target_macs"),
    ("{ratio: 0.95}", "ratio 0.95 is above max_ratio 0.9"),
    ("{method: fisher}", "must be one of"),
    ("{target_macs: 1.5}", "must be < 1, got 1.5"),
    ("{allocation: uniform}", "must be one of"),
    ("{steps: 0}", "must be >= 1"),
    ("{ratio: 0.5, target_latency: 0.5}", "give one of ratio, target_macs, target_params, target_latency, target_latency_ms"),
    ("{target_latency: 1.5}", "must be < 1, got 1.5"),
    ("{target_latency_ms: 0}", "must be > 0"),
    ("{ratio: 0.5, precision: int8}", "`precision` is for latency targets"),
    ("{target_latency: 0.5, precision: float16}", "float32"),
    ("{ratio: 0.5, round_to: auto}", "round_to: auto measures the kernel tile of a device"),
    ("{ratio: 0.5, round_to: 0}", "round_to must be in [1, 256] or auto"),
    ("{target_latency: 0.5, device: no-such-device}", "no-such-device"),
])
def test_bad_prune_configs_name_file_line_and_field(body, message):
    with pytest.raises(UserError) as err:
        parse_recipe(recipe_with(body), "r.yaml")
    assert "r.yaml:7: stages[1].prune" in str(err.value) and message in str(err.value)


def test_latency_targets_resolve_device_and_precision():
    from edge_pipeline.stages.prune import priced_precision

    recipe = parse_recipe(HEAD + "stages:\n  - train: {}\n  - prune: {target_latency: 0.5, round_to: auto}\n"
                          "  - quantize: {mode: [float16, int8]}\n", "r.yaml")
    cfg = recipe.stages[1].config
    assert cfg.latency_device == "host" and cfg.round_to == "auto" and priced_precision(cfg, recipe) == "int8"
    plain = parse_recipe(recipe_with("{target_latency_ms: 2.0, device: qemu-aarch64}"), "r.yaml")
    assert plain.stages[1].config.latency_device == "qemu-aarch64" and priced_precision(plain.stages[1].config, plain) == "float32"
    assert parse_recipe(recipe_with("{ratio: 0.5}"), "r.yaml").stages[1].config.latency_device is None


def test_defaults_fill_the_target():
    stages = parse_recipe(HEAD + "stages:\n  - train: {}\n  - prune: {}\n  - prune: {name: sparse, method: magnitude}\n", "r.yaml").stages
    assert stages[1].config.ratio == 0.5 and stages[1].config.target_macs is None
    assert stages[2].config.sparsity == 0.5 and stages[2].config.ratio is None


@pytest.fixture(scope="module")
def taylor_run(tmp_path_factory):
    """train (with the BatchNorm L1 penalty) -> 2 taylor rounds to 50% of MACs, each fine-tuned."""
    root = tmp_path_factory.mktemp("taylor")
    recipe = write(root / "r.yaml", HEAD + """\
stages:
  - train: {epochs: 2, lr: 0.05, bn_l1: 0.001}
  - prune: {method: taylor, target_macs: 0.5, steps: 2, calibration_samples: 64, finetune: {epochs: 1}}
""")
    assert main(["run", str(recipe), "--out", str(root / "run")]) == 0
    return root / "run"


def test_rounds_reach_the_macs_target_and_replay(taylor_run):
    metrics = json.loads((taylor_run / "metrics.json").read_text())
    models = {s["name"]: s["model"] for s in metrics["stages"]}
    assert 0.475 <= models["prune"]["macs"] / models["train"]["macs"] <= 0.5
    details = json.loads((taylor_run / "02-prune" / "details.json").read_text())
    rounds = details["rounds"]
    assert [r["step"] for r in rounds] == [1, 2] and all(len(r["history"]) == 1 for r in rounds)
    assert rounds[0]["macs"] > rounds[1]["macs"]  # the first round stops halfway (a straight line to the target)
    assert 0.7 <= rounds[0]["macs"] / details["macs"][0] <= 0.75
    model = load_model(taylor_run / "02-prune")  # two prune edits replayed, weights loaded strictly
    assert [e.transform for e in model.edits] == ["prune", "prune"]
    assert all(e.summary["criterion"] == "taylor" for e in model.edits)


def test_magnitude_sparsity_survives_fine_tuning(tmp_path):
    recipe = write(tmp_path / "r.yaml", HEAD + """\
stages:
  - train: {epochs: 1}
  - prune: {method: magnitude, sparsity: 0.7}
  - finetune: {epochs: 1, distill: {teacher: train}}
""")
    assert main(["run", str(recipe), "--out", str(tmp_path / "run")]) == 0
    pruned = load_model(tmp_path / "run" / "02-prune").module
    tuned = load_model(tmp_path / "run" / "03-finetune").module
    layers = [n for n, m in pruned.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))][:-1]
    for name in layers:
        zeros = pruned.get_submodule(name).weight == 0
        assert bool((tuned.get_submodule(name).weight[zeros] == 0).all()), name
    details = json.loads((tmp_path / "run" / "03-finetune" / "details.json").read_text())
    assert details["kept_zero_weights"] > 0


def test_bn_l1_penalty_drives_batchnorm_scales_down(tiny_data):
    from edge_pipeline.models import BaseSpec, build_model
    from edge_pipeline.stages.runners.train import bn_regularizer
    from edge_pipeline.stages.train import TrainConfig
    from edge_pipeline.training import cross_entropy, fit

    gammas = {}
    for strength in (0.0, 0.1):
        torch.manual_seed(0)
        model = build_model(BaseSpec("vgg_small", 10, 1, 16, 0.5))
        cfg = TrainConfig(epochs=1, lr=0.05, bn_l1=strength)
        fit(model, tiny_data, cfg, 0, cross_entropy(), "t", regularizer=bn_regularizer(cfg))
        gammas[strength] = torch.cat([m.weight.detach().abs() for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)])
    assert bn_regularizer(TrainConfig()) is None
    assert float(gammas[0.1].mean()) < 0.93 * float(gammas[0.0].mean())


def test_report_has_a_pruning_section(taylor_run):
    text = (taylor_run / "report.md").read_text()
    section = text[text.index("## Pruning and fine-tuning"):]
    assert "**prune** (taylor, macs kept 0.5, per_layer, 2 rounds): MACs" in section
    details = json.loads((taylor_run / "02-prune" / "details.json").read_text())
    first_layer = sorted(details["channels"].items(), key=lambda kv: (kv[1][1] / kv[1][0], kv[0]))[0]
    path, (before, after) = first_layer
    assert f"| {path} | {before} -> {after} |" in section
    assert "<h2>Pruning and fine-tuning</h2>" in (taylor_run / "report.html").read_text()


def test_max_ratio_holds_over_all_rounds(taylor_run):
    details = json.loads((taylor_run / "02-prune" / "details.json").read_text())
    assert all(after >= 0.1 * before for before, after in details["channels"].values())
