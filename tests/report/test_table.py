"""The stage table: one row per model stage and per exported file x device, formatted for humans."""

from __future__ import annotations

import json

from edge_pipeline.report import build_rows, write_reports
from edge_pipeline.report.table import fmt_bytes, fmt_count

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


def test_rows_cover_models_and_each_device(tmp_path):
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "host__model_int8.json").write_text(json.dumps(_profile("host", 0.06)))
    (tmp_path / "profiles" / "rpi4__model_int8.json").write_text(json.dumps(_profile("rpi4", 0.9, valid=False)))
    rows = build_rows(tmp_path, METRICS)
    assert [(r.stage, r.kind, r.device) for r in rows] == [
        ("train", "torch fp32", None), ("export", "tflite int8", "host"), ("export", "tflite int8", "rpi4")]
    assert rows[2].notes == ["invalid: noisy"]
    write_reports(tmp_path, METRICS, "title")
    md = (tmp_path / "report.md").read_text()
    assert "| train | torch fp32 | done | 99.63 | 204.51k | 9.72M | 803.9 KB |" in md
    assert "| export | tflite int8 | cached | 98.89 | - | - | 50.5 KB | rpi4 | 0.900 | 0.990 | 49.0 | invalid: noisy |" in md
    assert "<table>" in (tmp_path / "report.html").read_text()


def test_number_formats():
    assert (fmt_count(None), fmt_count(999), fmt_count(1500), fmt_count(2_500_000)) == ("-", "999", "1.50k", "2.50M")
    assert (fmt_bytes(100), fmt_bytes(2048), fmt_bytes(3 << 20)) == ("100 B", "2.0 KB", "3.0 MB")
