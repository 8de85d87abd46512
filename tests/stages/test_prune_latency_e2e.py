"""A latency budget end to end: prune `target_latency` with `round_to: auto` on this host, quantize,
export, profile. The device's latency model is built on the way (real single-op timings), the target
is met in that model, the profile stage predicts beside measuring, and the exported file's own ops
price to the same milliseconds as the torch model's predicted ops (the mapping is exact)."""

from __future__ import annotations

import json

import pytest

from edge_pipeline.cli import main
from edge_pipeline.profiling.devices import get_device
from edge_pipeline.profiling.latency_table import load_table
from edge_pipeline.profiling.layer_latency import tile_of
from edge_pipeline.profiling.predict import predict_file

from ..conftest import write

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

RECIPE = """\
name: latency-budget
seed: 0
data: {dataset: digits, image_size: 32, batch_size: 32, limit: 300}
model: {arch: vgg_small}
stages:
  - train: {epochs: 1}
  - prune: {target_latency: 0.6, round_to: auto, allocation: global}
  - quantize: {mode: int8, calibration_samples: 64}
  - export: {}
  - profile: {devices: [host], baseline: false, outputs_check: 0}
"""


@pytest.fixture(scope="module")
def budget_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("latency-budget")
    mp = pytest.MonkeyPatch()
    mp.setenv("EDGE_PIPELINE_CACHE", str(root / "cache"))
    try:
        recipe = write(root / "r.yaml", RECIPE)
        assert main(["run", str(recipe), "--out", str(root / "run")]) == 0
        yield root
    finally:
        mp.undo()


def details(run, stage: str) -> dict:
    return json.loads(next((run / "run").glob(f"*-{stage}/details.json")).read_text())


def test_the_target_is_met_in_the_latency_model_with_whole_kernel_tiles(budget_run):
    latency = details(budget_run, "prune")["latency"]
    assert latency["device"] == "host" and latency["precision"] == "int8"  # the recipe quantizes to int8
    assert latency["target_ms"] == pytest.approx(0.6 * latency["incoming_ms"], rel=1e-3)
    assert latency["predicted_ms"] <= latency["target_ms"] * 1.02
    assert latency["predicted_ms"] < latency["incoming_ms"]
    series = {int(k): v for k, v in latency["tile"]["conv1x1"]["ms"].items()}
    assert latency["round_to"] == min(tile_of(series), latency["tile"]["conv3x3"]["tile"])
    channels = details(budget_run, "prune")["channels"]
    assert channels and all(after % latency["round_to"] == 0 for _, after in channels.values())
    assert latency["attempts"] and latency["attempts"][-1]["round"] == 1


def test_the_exported_file_prices_like_the_pruned_torch_model(budget_run):
    """Same ops, same table entries: the torch-side prediction is the file's."""
    latency = details(budget_run, "prune")["latency"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGE_PIPELINE_CACHE", str(budget_run / "cache"))
        exported = next((budget_run / "run").glob("*-export/model_int8.tflite"))
        assert predict_file(exported, get_device("host")).ms == pytest.approx(latency["predicted_ms"], rel=1e-3)


def test_the_profile_stage_predicts_beside_measuring(budget_run):
    profile = json.loads(next((budget_run / "run" / "profiles").glob("host__model_int8.json")).read_text())
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGE_PIPELINE_CACHE", str(budget_run / "cache"))
        table = load_table(get_device("host"))
    assert table is not None and profile["predictor"]["table"] == table.name
    assert profile["predicted_ms"] > 0 and profile["latency_ms"]["median"] > 0


def test_the_report_shows_target_predicted_and_measured(budget_run):
    report = (budget_run / "run" / "report.md").read_text()
    assert "pruned (predicted)" in report and "latency at most 0.6 of the incoming model's" in report
    assert "round_to auto:" in report


MEASURED = """\
name: latency-measured
seed: 0
data: {dataset: digits, image_size: 32, batch_size: 32, limit: 300}
model: {arch: vgg_small}
stages:
  - train: {epochs: 1}
  - prune: {target_latency: 0.6, latency_from: measured, precision: float32, allocation: global}
"""


def test_latency_from_measured_times_the_candidates_on_the_device(tmp_path, monkeypatch):
    """The incoming model and each candidate are converted and timed on the host; the attempts
    record the measured fractions; the measurements teach the device's table."""
    from edge_pipeline.stages.runners.prune_latency import MEASURED_ATTEMPTS

    monkeypatch.setenv("EDGE_PIPELINE_CACHE", str(tmp_path / "cache"))
    assert main(["run", str(write(tmp_path / "r.yaml", MEASURED)), "--out", str(tmp_path / "run")]) == 0
    latency = json.loads(next((tmp_path / "run").glob("*-prune/details.json")).read_text())["latency"]
    assert latency["precision"] == "float32" and latency["incoming_measured_ms"] > 0
    measured = [a for a in latency["attempts"] if "measured_ratio" in a]
    assert 1 <= len(measured) <= MEASURED_ATTEMPTS and all(0 < a["measured_ratio"] < 1.5 for a in measured)
    table = load_table(get_device("host"))
    assert table is not None and len(table.models) == 1 + len(measured)  # every timed model is kept
