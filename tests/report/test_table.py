"""The stage table: one row per model stage and per exported file x device, formatted for humans,
from the one record type that `compare` uses too."""

from __future__ import annotations

import json

import pytest

from edge_pipeline.report import fmt, stage_records, write_reports
from edge_pipeline.report.plots import accuracy_limits
from edge_pipeline.report.records import build_record, model_facts, profile_records
from edge_pipeline.report.table import cells
from edge_pipeline.rundir import RunDir

METRICS = {
    "recipe": "r", "version": "0.1.0",
    "stages": [
        {"name": "train", "type": "train", "status": "done", "seconds": 3.0,
         "model": {"params": 204506, "macs": 9716992, "size_bytes": 823208, "accuracy": 0.9963}},
        {"name": "export", "type": "export", "status": "cached", "seconds": 0.1,
         "artifacts": [{"format": "tflite", "precision": "int8", "path": "02-export/model_int8.tflite",
                        "size_bytes": 51664, "accuracy": 0.9889, "ops": {"CONV_2D": 7}}]},
        {"name": "profile", "type": "profile", "status": "done", "seconds": 9.0,
         "profiles": ["profiles/host__model_int8.json", "profiles/rpi4__model_int8.json"]},
    ],
}


def _profile(device, median, valid=True):
    return {"device": device, "model": "model_int8.tflite", "latency_ms": {"median": median, "p90": median * 1.1},
            "peak_rss_mb": 49.0, "valid": valid, "invalid_reasons": [] if valid else ["noisy"]}


@pytest.fixture
def run(tmp_path) -> RunDir:
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "host__model_int8.json").write_text(json.dumps(_profile("host", 0.06)))
    (tmp_path / "profiles" / "rpi4__model_int8.json").write_text(json.dumps(_profile("rpi4", 0.9, valid=False)))
    return RunDir(tmp_path)


def test_rows_cover_models_and_each_device(run):
    rows = stage_records(run, METRICS)
    assert [(r.stage, r.kind, r.device) for r in rows] == [
        ("train", "torch fp32", None), ("export", "tflite int8", "host"), ("export", "tflite int8", "rpi4")]
    assert rows[2].notes == ["noisy"] and rows[2].valid is False
    notes = cells(rows[2])[-1]
    assert notes.text == "invalid: noisy" and notes.flag == "bad"
    write_reports(run.root, METRICS, "title")
    md = run.report_md.read_text()
    assert "| train | torch fp32 | done | 99.63% | 204.51k | 9.72M | 803.9 KB |" in md
    assert "| export | tflite int8 | cached | 98.89% | - | - | 50.5 KB | rpi4 | 0.900 | 0.990 | 49.0 | invalid: noisy |" in md
    assert "<table>" in run.report_html.read_text()


def test_stage_table_and_compare_share_one_record_per_profile(run):
    table = {r.device: r for r in stage_records(run, METRICS) if r.device}
    compared = {r.device: r for r in profile_records(run, METRICS)}
    assert table == compared  # the same facts (stage, precision, accuracy) joined with the same profile
    assert compared["host"].accuracy == 0.9889 and compared["host"].stage == "export" and compared["host"].median_ms == 0.06


def test_a_file_profiled_nowhere_keeps_its_row():
    (export,) = [r for r in model_facts(METRICS) if r.file]
    record = build_record(export, None)
    assert (record.kind, record.size_bytes, record.device, record.median_ms) == ("tflite int8", 51664, None, None)


def test_number_formats():
    assert (fmt.count(None), fmt.count(999), fmt.count(1500), fmt.count(2_500_000)) == ("-", "999", "1.50k", "2.50M")
    assert (fmt.size(None), fmt.size(100), fmt.size(2048), fmt.size(3 << 20)) == ("-", "100 B", "2.0 KB", "3.0 MB")
    assert (fmt.pct(None), fmt.pct(0.9963), fmt.pct(0.1, digits=1), fmt.pct(1.0)) == ("-", "99.63%", "10.0%", "100.00%")
    assert (fmt.points(0.0037), fmt.points(-0.01), fmt.points(None)) == ("+0.37", "-1.00", "-")
    assert (fmt.ms(0.0092), fmt.ms(1.5, digits=4), fmt.mb(49.19), fmt.seconds(67.23)) == ("0.009", "1.5000", "49.2", "67.2 s")
    assert fmt.change(27058, 11906) == "27.06k -> 11.91k (0.44x)" and fmt.change(0, 5) == "-"
    assert (fmt.kept(8, 4), fmt.kept(0, 4), fmt.number(3.681e-07, ".2e")) == ("50%", "-", "3.68e-07")


@pytest.mark.parametrize("percents", [[100.0], [99.2, 100.0], [0.0, 3.0], [10.0, 96.7], [50.0]])
def test_accuracy_axis_stays_within_0_and_100(percents):
    low, high = accuracy_limits(percents)
    assert 0.0 <= low <= min(percents) and max(percents) <= high <= 100.0 and high > low
