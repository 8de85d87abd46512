"""BatchNorm statistics after train/finetune (`refresh_bn`): running statistics that did not converge
are noticed (eval mode far below batch statistics on the same validation batch) and re-estimated;
a model whose statistics are sound is left exactly as trained."""

from __future__ import annotations

import json

import pytest
from torch import nn

from edge_pipeline.cli import main
from edge_pipeline.errors import UserError
from edge_pipeline.recipe import parse_recipe
from edge_pipeline.schema import config_dump

from ..conftest import write

HEAD = """\
name: bn
seed: 0
data: {dataset: digits, image_size: 16, batch_size: 64}
model: {arch: vgg_small, width: 0.5}
"""


def test_refresh_bn_is_auto_true_or_false_and_part_of_the_cache_key():
    stages = parse_recipe(HEAD + "stages:\n  - train: {epochs: 1}\n  - finetune: {epochs: 1, refresh_bn: false}\n"
                          "  - finetune: {name: again, epochs: 1, refresh_bn: true}\n", "r.yaml").stages
    assert [s.config.refresh_bn for s in stages] == ["auto", False, True]
    # config_dump is the config part of the cache key (and of the resolved recipe).
    assert [config_dump(s.config)["refresh_bn"] for s in stages] == ["auto", False, True]
    with pytest.raises(UserError, match=r"stages\[0\].train.refresh_bn: must be auto, true or false, got 'often'"):
        parse_recipe(HEAD + "stages:\n  - train: {refresh_bn: often}\n", "r.yaml")


def _tiny_momentum(monkeypatch, momentum: float = 0.001) -> None:
    """The zoo model as the train stage builds it, with BatchNorm momentum `momentum`: 60 steps move
    the running statistics ~6% of the way from their init (mean 0, var 1) to the data's."""
    from edge_pipeline.stages.runners import train as train_runner

    build = train_runner.build_model

    def build_with_tiny_momentum(base):
        module = build(base)
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.momentum = momentum
        return module

    monkeypatch.setattr(train_runner, "build_model", build_with_tiny_momentum)


@pytest.mark.slow
def test_unconverged_statistics_are_re_estimated_and_reported(tmp_path, monkeypatch):
    _tiny_momentum(monkeypatch)
    recipe = write(tmp_path / "r.yaml", HEAD + """\
stages:
  - train: {epochs: 3, lr: 0.05}
  - finetune: {epochs: 1, lr: 0.01, refresh_bn: true}
""")
    out = tmp_path / "run"
    assert main(["run", str(recipe), "--out", str(out)]) == 0
    train = json.loads((out / "01-train" / "details.json").read_text())
    check = train["batchnorm"]
    assert check["stale"] and check["refreshed"] and check["kept"]
    assert check["batch_statistics_accuracy"] - check["eval_accuracy"] > 0.3  # eval mode is far off
    assert check["val_accuracy_after"] > check["val_accuracy_before"] + 0.3
    assert check["val_accuracy_after"] > 0.7 and train["val_accuracy"] == check["val_accuracy_after"]
    # The saved (and evaluated) model is the repaired one.
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["stages"][0]["model"]["accuracy"] > 0.7

    # finetune's model is rebuilt with the zoo's momentum; `true` re-estimates anyway, kept unless it hurts.
    finetune = json.loads((out / "02-finetune" / "details.json").read_text())["batchnorm"]
    assert finetune["refresh_bn"] is True and finetune["refreshed"]
    assert finetune["kept"] == (finetune["val_accuracy_after"] >= finetune["val_accuracy_before"])

    report = (out / "report.md").read_text()
    assert (f"**train**: BatchNorm statistics re-estimated (eval mode {check['eval_accuracy']:.2%} vs "
            f"{check['batch_statistics_accuracy']:.2%} with batch statistics on 256 validation images): "
            f"validation accuracy {check['val_accuracy_before']:.2%} -> {check['val_accuracy_after']:.2%}.") in report


@pytest.mark.slow
def test_sound_statistics_leave_the_model_byte_identical(tmp_path):
    runs = {}
    for setting in ("auto", "false"):
        recipe = write(tmp_path / f"{setting}.yaml", HEAD + f"stages:\n  - train: {{epochs: 3, lr: 0.05, refresh_bn: {setting}}}\n")
        runs[setting] = tmp_path / setting
        assert main(["run", str(recipe), "--out", str(runs[setting])]) == 0
    check = json.loads((runs["auto"] / "01-train" / "details.json").read_text())["batchnorm"]
    assert not check["stale"] and not check["refreshed"]
    assert check["batch_statistics_accuracy"] - check["eval_accuracy"] <= 0.05
    assert "batchnorm" not in json.loads((runs["false"] / "01-train" / "details.json").read_text())
    weights = [(runs[s] / "01-train" / "model.safetensors").read_bytes() for s in ("auto", "false")]
    assert weights[0] == weights[1]
    assert "BatchNorm statistics re-estimated" not in (runs["auto"] / "report.md").read_text()
