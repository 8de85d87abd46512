"""`export`: gates, bundle, metrics contract, diagnosis/keep_float in the run, device runtime checks.

The end-to-end test runs the real pipeline on a model with one deliberately hard-to-quantize
channel (weights given to `train` with `epochs: 0`): the gate stops the run naming the layer,
earlier stages stay cached, and `auto_keep_float: 1` makes it pass.
"""

from __future__ import annotations

import json

import pytest

from edge_pipeline.cli import main

from ..conftest import write
from .conftest import HARD_HEAD as HEAD


def statuses(out):
    return {s["name"]: s["status"] for s in json.loads((out / "metrics.json").read_text())["stages"]}


@pytest.mark.slow
def test_gate_stops_the_run_naming_the_layer_and_auto_keep_float_recovers(hard_weights, tmp_path, capsys, fast_device):
    weights, trained_accuracy = hard_weights
    recipe = write(tmp_path / "hard.yaml", HEAD.replace("width: 0.5}", f"width: 0.5, weights: {weights}}}") + f"""\
stages:
  - train: {{epochs: 0}}
  - quantize: {{mode: int8, calibration_samples: 128, max_accuracy_drop: 0.02, min_agreement: 0.95}}
  - export: {{}}
  - profile: {{devices: [{fast_device}]}}
""")
    out = tmp_path / "run"
    assert main(["run", str(recipe), "--out", str(out)]) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and err[0].startswith("error: export: int8 fails the quantization gate:"), err
    assert "Worst layers: features.0 (CONV_2D" in err[0] and "auto_keep_float" in err[0]
    assert (out / "logs" / "03-export-diagnosis-int8.json").is_file()
    assert statuses(out) == {"train": "done", "quantize": "done"}
    assert not (out / "03-export").exists()

    # Keep the worst layer in float, and take float32 input/output this time.
    assert main(["run", str(recipe), "--out", str(out), "--set", "stages.quantize.auto_keep_float=1",
                 "--set", "stages.quantize.io_type=float32"]) == 0
    assert statuses(out) == {"train": "cached", "quantize": "done", "export": "done", "profile": "done"}
    export = out / "03-export"
    details = json.loads((export / "details.json").read_text())
    cost = details["keep_float"]
    assert cost["layers"] == ["features.0"]
    assert cost["full_int8"]["accuracy"] < details["float_accuracy"] - 0.02
    assert cost["mixed"]["accuracy"] >= details["float_accuracy"] - 0.02 and cost["accuracy_gain"] > 0
    assert cost["mixed"]["host_latency_ms"] > 0 and cost["latency_ratio"] > 0
    (gate,) = details["gates"]["results"].values()
    assert gate["status"] == "pass" and gate["failures"] == [] and gate["reason"] is None
    assert [(c["gate"], c["limit"], c["default"]) for c in gate["checks"]] == [
        ("max_accuracy_drop", 0.02, False), ("min_agreement", 0.95, False)]
    assert abs(details["float_accuracy"] - trained_accuracy) < 0.01
    assert details["diagnosis"]["int8"]["verified"]

    metrics = json.loads((out / "metrics.json").read_text())
    (entry,) = [s for s in metrics["stages"] if s["type"] == "export"]
    assert [a["precision"] for a in entry["artifacts"]] == ["float32", "int8"]
    for artifact in entry["artifacts"]:
        assert set(artifact) == {"format", "precision", "path", "size_bytes", "accuracy", "ops"}
        assert (out / artifact["path"]).is_file()
    profiled = json.loads((out / "metrics.json").read_text())["stages"][-1]["profiles"]
    assert len(profiled) == 2

    # The bundle: model.tflite (the int8 model), labels, metadata, ONNX.
    assert (export / "model.tflite").read_bytes() == (export / "model_int8.tflite").read_bytes()
    assert (export / "labels.txt").read_text().split() == [str(i) for i in range(10)]
    meta = json.loads((export / "metadata.json").read_text())
    assert meta["model_precision"] == "int8" and meta["layout"] == "NHWC" and meta["input_shape"] == [1, 16, 16, 1]
    assert meta["normalization"]["mean"] and meta["files"]["int8"]["dtype"] == "float32"
    assert "quantization" not in meta["files"]["int8"]["input"]
    assert meta["quantization"]["auto_keep_float"] == 1 and len(meta["recipe_sha256"]) == 64
    assert (export / "model.onnx").is_file()

    report = (out / "report.md").read_text()
    assert "## Quantization and conversion" in report and "Kept in float in the int8 model: features.0" in report
    assert "| 1 | " in report  # a ranked diagnosis row

    # The run folder is enough for `diagnose`: it finds float32, int8, the ONNX model and the calibration set.
    capsys.readouterr()
    assert main(["diagnose", str(out), "--precision", "int8", "--json", "--top", "100"]) == 0
    ranked = {r["layer"]: r for r in json.loads(capsys.readouterr().out)["ranked"]}
    assert ranked["features.0"]["quant_dtype"] == "float32" and ranked["features.3"]["quant_dtype"] == "float32"
    assert ranked["features.7"]["quant_dtype"] == "int8"  # after the next weighted layer, int8 again


def _one_line(text: str) -> str:
    """Console output as one line (rich wraps long lines at the captured terminal's width)."""
    return " ".join(text.split())


@pytest.mark.slow
def test_default_gates_stop_a_recipe_without_gates_and_the_recipe_can_relax_them(hard_weights, tmp_path, capsys):
    """The issue's case: a trained model whose int8 file falls to chance, in a recipe with no gate."""
    weights, _ = hard_weights
    recipe = write(tmp_path / "hard.yaml", HEAD.replace("width: 0.5}", f"width: 0.5, weights: {weights}}}") + """\
stages:
  - train: {epochs: 0}
  - quantize: {mode: int8, calibration_samples: 128}
  - export: {}
""")
    out = tmp_path / "run"
    assert main(["run", str(recipe), "--out", str(out)]) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and err[0].startswith("error: export: int8 fails the quantization gate:"), err
    assert "(max_accuracy_drop 0.03 = 3.00 points, the default for int8)" in err[0]
    assert "< min_agreement 90.00% (the default for int8)" in err[0]
    assert "Try quantize.auto_keep_float: 1" in err[0]
    assert "relax the default int8 gate: set quantize.max_accuracy_drop or quantize.min_agreement in the recipe" in err[0]
    assert statuses(out) == {"train": "done", "quantize": "done"}

    # The recipe accepts the loss explicitly: no accuracy gate, a 5% agreement floor.
    assert main(["run", str(recipe), "--out", str(out), "--set", "stages.quantize.max_accuracy_drop=null",
                 "--set", "stages.quantize.min_agreement=0.05"]) == 0
    details = json.loads((out / "03-export" / "details.json").read_text())
    gate = details["gates"]["results"]["int8"]
    assert gate["status"] == "pass" and not details["untrained"]
    assert [(c["gate"], c["limit"], c["default"], c["passed"]) for c in gate["checks"]] == [("min_agreement", 0.05, False, True)]
    report = (out / "report.md").read_text()
    assert "Gate limits: int8: agreement >= 5.00%." in report
    # The int8 file scores at chance: the terminal summary says so next to its accuracy.
    summary = capsys.readouterr().out
    assert "chance accuracy" in summary and "untrained" not in summary


@pytest.mark.slow
def test_untrained_model_is_reported_not_judged(tmp_path, capsys):
    """A random-init model exports fine; its files are 'not applicable' to the gates, not 'pass'."""
    recipe = write(tmp_path / "r.yaml", HEAD + """\
stages:
  - train: {epochs: 0}
  - quantize: {mode: [int8, float16], calibration_samples: 32}
  - export: {}
""")
    out = tmp_path / "run"
    assert main(["run", str(recipe), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "export: the float model is untrained: test accuracy" in _one_line(captured.err)
    assert "float model untrained" in captured.out  # the terminal summary
    details = json.loads((out / "03-export" / "details.json").read_text())
    assert details["untrained"] and details["chance_accuracy"] == 0.1 and details["test_samples"] == 270
    for gate in details["gates"]["results"].values():
        assert gate["status"] == "not applicable" and gate["checks"] == [] and "untrained" in gate["reason"]
    report = (out / "report.md").read_text()
    assert "**Untrained float model**" in report and "not applicable: untrained float model" in report
    assert "Gate limits" not in report and "| pass |" not in report
    assert "untrained: chance accuracy" in report  # the train stage's row of the stage table


@pytest.mark.slow
def test_runtime_check_stops_export_before_deployment(tmp_path, capsys):
    """A device whose runtime cannot load a file stops the export with the op and the fix."""
    device = write(tmp_path / "devices" / "future-board.yaml", """\
name: future-board
transport: {kind: local}
runtime: {name: tflite-runtime, version: "1.13"}
""")
    recipe = write(tmp_path / "r.yaml", HEAD + f"""\
stages:
  - train: {{epochs: 1}}
  - quantize: {{mode: [int8], calibration_samples: 32}}
  - export: {{target_devices: [{device}]}}
""")
    assert main(["run", str(recipe), "--out", str(tmp_path / "run")]) == 1
    err = "\n".join(line for line in capsys.readouterr().err.splitlines() if line.startswith("error:"))
    assert "error: export: device runtime check failed:" in err
    assert "future-board: model_int8.tflite: does not load on tflite-runtime 1.13" in err
    assert "min_runtime_version" in err and "Fix:" in err
