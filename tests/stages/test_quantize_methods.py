"""`quantize: {equalize, bias_correction}` through the pipeline: the hard model of the export tests
(a trained vgg_small with one channel 1000x wider, same float function) holds in int8 without any
layer kept in float, and the export converts the quantize stage's prepared model."""

from __future__ import annotations

import json

import pytest

from edge_pipeline.cli import main

from ..conftest import write
from .conftest import HARD_HEAD


@pytest.mark.slow
def test_equalization_makes_the_hard_model_pass_the_int8_gate_without_keep_float(hard_weights, tmp_path):
    weights, trained_accuracy = hard_weights
    recipe = write(tmp_path / "hard.yaml", HARD_HEAD.replace("width: 0.5}", f"width: 0.5, weights: {weights}}}") + """\
stages:
  - train: {epochs: 0}
  - quantize: {mode: int8, calibration_samples: 128, max_accuracy_drop: 0.02, min_agreement: 0.95,
               equalize: true, bias_correction: empirical}
  - export: {}
""")
    out = tmp_path / "run"
    assert main(["run", str(recipe), "--out", str(out)]) == 0
    quantize = json.loads((out / "02-quantize" / "details.json").read_text())
    steps = {s["method"]: s for s in quantize["methods"]}
    assert list(steps) == ["ptq", "equalize", "bias_correction"]
    # Equalization is function-preserving; in simulation it repairs int8, and the file agrees.
    assert abs(steps["equalize"]["float_accuracy"] - steps["ptq"]["float_accuracy"]) < 0.005
    assert steps["equalize"]["int8_agreement"] > steps["ptq"]["int8_agreement"]
    assert any(p["first"] == "features.0" and p["spread_after"] < p["spread_before"] for p in steps["equalize"]["pairs"])
    assert quantize["plan"]["model_dir"] == "model" and (out / "02-quantize" / "model" / "model.safetensors").is_file()

    export = json.loads((out / "03-export" / "details.json").read_text())
    assert "keep_float" not in export
    assert abs(export["float_accuracy"] - trained_accuracy) < 0.01
    int8 = export["precisions"]["int8"]
    assert int8["accuracy"] >= export["float_accuracy"] - 0.02 and int8["agreement"] >= 0.95

    # Without the methods the same file fails the gate (the control).
    assert main(["run", str(recipe), "--out", str(out), "--set", "stages.quantize.equalize=false",
                 "--set", "stages.quantize.bias_correction=none"]) == 1


@pytest.mark.slow
def test_qat_trains_through_the_hard_model_once_equalized(hard_weights, tmp_path, capsys):
    """Plain QAT on the 1000x channel diverges (its gradients are 1000x too large) and says so in one
    line; `qat: {equalize: true}` rescales first and the int8 file holds."""
    weights, _ = hard_weights
    recipe = write(tmp_path / "hard.yaml", HARD_HEAD.replace("width: 0.5}", f"width: 0.5, weights: {weights}}}") + """\
stages:
  - train: {epochs: 0}
  - qat: {epochs: 1, calibration_samples: 128, equalize: true}
  - quantize: {mode: int8, calibration_samples: 128, max_accuracy_drop: 0.02, min_agreement: 0.95}
  - export: {}
""")
    out = tmp_path / "run"
    assert main(["run", str(recipe), "--out", str(out)]) == 0
    qat = json.loads((out / "02-qat" / "details.json").read_text())
    assert any(p["first"] == "features.0" for p in qat["equalize"]["pairs"])
    export = json.loads((out / "04-export" / "details.json").read_text())
    int8 = export["precisions"]["int8"]
    assert int8["accuracy"] >= export["float_accuracy"] - 0.02 and int8["agreement"] >= 0.95
    capsys.readouterr()
    # The control: without equalization, QAT stops with its one-line error; the cached train stays.
    assert main(["run", str(recipe), "--out", str(tmp_path / "plain"), "--set", "stages.qat.equalize=false"]) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "qat" in errors[0] and "nan" in errors[0], errors
