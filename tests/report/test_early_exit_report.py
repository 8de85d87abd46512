"""The report's Early exits section from a hand-written run folder (figures shaped like a real tiny
run): the stage's choice, the TFLite chain per precision, the device table and both plots."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from PIL import Image

from edge_pipeline.report import write_reports
from edge_pipeline.report.early_exit_section import CURVE_PLOT, HISTOGRAM_PLOT, early_exit_section
from edge_pipeline.report.sections import ReportContext
from edge_pipeline.rundir import RunDir, stage_dirname

from .fabricated import EVIL, _profile

EXITS = [{"index": 0, "macs": 170000, "segment_macs": 165888, "branch_macs": 4112, "val_accuracy": 0.96, "test_accuracy": 0.967},
         {"index": 1, "macs": 400000, "segment_macs": 221184, "branch_macs": 12928, "val_accuracy": 0.98, "test_accuracy": 0.981},
         {"index": 2, "macs": 630000, "segment_macs": 230016, "branch_macs": 0, "val_accuracy": 0.97, "test_accuracy": 0.978}]

STAGE_DETAILS = {
    "mode": "self_distillation", "measure": "entropy", "threshold": 0.1892, "max_accuracy_drop": 0.005,
    "cuts": [{"node": "features_6", "label": f"features.6{EVIL}", "shape": [1, 8, 8, 8]},
             {"node": "features_13", "label": "features.13", "shape": [1, 16, 4, 4]}],
    "exits": EXITS, "plain_macs": 617088, "worst_case_macs": 630000,
    "val": {"threshold": 0.1892, "accuracy": 0.974, "expected_macs": 215000.0, "exit_counts": [241, 22, 7], "reference_accuracy": 0.97},
    "test": {"threshold": 0.1892, "accuracy": 0.9889, "expected_macs": 215000.0, "exit_counts": [241, 22, 7],
             "reference_accuracy": 0.978, "macs_ratio": 0.349},
    "grid": [0.0, 0.1892, 0.5],
    "other_measure": {"measure": "max_softmax", "test": {"threshold": 0.1, "accuracy": 0.985, "macs_ratio": 0.36}},
}


def _block(precision: str, scale: float) -> dict[str, Any]:
    rows = [{"threshold": 0.0, "accuracy": 0.98, "mean_ms": 0.12 * scale, "p90_ms": 0.13 * scale, "exit_counts": [0, 0, 256]},
            {"threshold": 0.1892, "accuracy": 0.977, "mean_ms": 0.05 * scale, "p90_ms": 0.09 * scale, "exit_counts": [230, 20, 6]},
            {"threshold": 0.5, "accuracy": 0.9, "mean_ms": 0.04 * scale, "p90_ms": 0.05 * scale, "exit_counts": [256, 0, 0]}]
    return {"precision": precision, "measure": "entropy", "samples": 256, "repeats": 3, "segments": 3, "thresholds": rows,
            "chosen": 0.1892, "plain_ms": 0.1 * scale, "plain_p90_ms": 0.11 * scale, "plain_accuracy": 0.98,
            "worst_case_ms": 0.12 * scale, "worst_case_p90_ms": 0.13 * scale, "worst_case_accuracy": 0.98,
            "exit_ms": [0.04 * scale, 0.09 * scale, 0.12 * scale], "speedup": 2.0, "worst_case_ratio": 1.2}


def exit_run(root: Path, with_profiles: bool = True) -> RunDir:
    names = ["train", "early_exit", "quantize", "export", "profile"]
    profiles = {f"{device}__model_{precision}.json": (device, precision) for device in ("host", "qemu-aarch64")
                for precision in ("int8",)} if with_profiles else {}
    stages = [
        {"name": "train", "type": "train", "status": "done", "seconds": 1.0,
         "model": {"params": 27058, "macs": 617088, "size_bytes": 112456, "accuracy": 0.978}},
        {"name": "early_exit", "type": "early_exit", "status": "done", "seconds": 1.0,
         "model": {"params": 28000, "macs": 617088, "size_bytes": 116000, "accuracy": 0.978}},
        {"name": "quantize", "type": "quantize", "status": "done", "seconds": 1.0},
        {"name": "export", "type": "export", "status": "done", "seconds": 1.0, "artifacts": [
            {"format": "tflite", "precision": "int8", "path": "04-export/model_int8.tflite", "size_bytes": 36000, "accuracy": 0.974,
             "ops": {"CONV_2D": 6}}]},
        {"name": "profile", "type": "profile", "status": "done", "seconds": 1.0, "profiles": [f"profiles/{n}" for n in profiles]},
    ]
    metrics = {"recipe": "ee", "version": "0.1.0", "stages": stages}
    (root / "profiles").mkdir(parents=True)
    (root / "metrics.json").write_text(json.dumps(metrics))
    export = {"early_exit": {"file": "exits.json", "segments": 3, "threshold": 0.1892, "measure": "entropy", "precisions": {
        "float32": {"plain_file": "model_float32.tflite", "exit_accuracy": [0.967, 0.981, 0.978], "size_bytes": 116000,
                    "adaptive": {"threshold": 0.1892, "accuracy": 0.9889, "expected_macs": 215000.0, "exit_counts": [241, 22, 7],
                                 "macs_ratio": 0.349}},
        "int8": {"plain_file": "model_int8.tflite", "exit_accuracy": [0.96, 0.97, 0.974], "size_bytes": 41000,
                 "adaptive": {"threshold": 0.1892, "accuracy": 0.977, "expected_macs": 220000.0, "exit_counts": [238, 24, 8],
                              "macs_ratio": 0.356}}}}}
    for index, name in enumerate(names):
        folder = root / stage_dirname(index, name)
        folder.mkdir()
        details = {"early_exit": STAGE_DETAILS, "export": export}.get(name)
        if details:
            (folder / "details.json").write_text(json.dumps(details))
    for filename, (device, precision) in profiles.items():
        profile = {**_profile(device, precision, 0.1 if device == "host" else 10.0, emulated=device != "host"),
                   "early_exit": _block(precision, 1.0 if device == "host" else 100.0)}
        (root / "profiles" / filename).write_text(json.dumps(profile))
    return RunDir(root)


def test_section_states_the_choice_the_chain_and_each_device(tmp_path):
    run = exit_run(tmp_path / "run")
    section = early_exit_section(ReportContext(run, run.read_metrics()))
    assert section is not None and section.title == "Early exits"
    md = section.markdown
    assert "2 exit branch(es) after features.6" in md and "self-distilled from the final classifier (FastBERT)" in md
    assert "entropy < 0.1892" in md and "expected MACs 0.35x of the plain model" in md
    assert "with max_softmax instead: threshold 0.1" in md
    assert re.search(r"\| int8 \| 96\.00% / 97\.00% / 97\.40% \| 97\.70% \| 0\.36x \|", md)
    assert re.search(r"\| host \| int8 \| 0\.1892 \| 97\.70% \| 0\.050 / 0\.090 \| 0\.100 \| 2\.00x \| 1\.20x \| "
                     r"0\.40 / 0\.90 / 1\.20 \| \[230, 20, 6\] \|", md)
    assert "qemu-aarch64 (emulated)" in md
    for name in (CURVE_PLOT, HISTOGRAM_PLOT):
        with Image.open(run.plots_dir / name) as png:
            assert png.width > 300 and png.height > 200


def test_without_profiles_the_section_has_no_device_rows_or_curve(tmp_path):
    run = exit_run(tmp_path / "run", with_profiles=False)
    section = early_exit_section(ReportContext(run, run.read_metrics()))
    assert section is not None
    assert "speed-up" not in section.markdown and not (run.plots_dir / CURVE_PLOT).exists()
    assert (run.plots_dir / HISTOGRAM_PLOT).exists()  # torch's histogram on the test split is still shown


def test_no_early_exit_stage_no_section(tmp_path):
    run = exit_run(tmp_path / "run")
    metrics = run.read_metrics()
    metrics["stages"] = [s for s in metrics["stages"] if s["type"] != "early_exit"]
    assert early_exit_section(ReportContext(run, metrics, plots=False)) is None


def test_report_pages_escape_file_text(tmp_path):
    run = exit_run(tmp_path / "run")
    write_reports(run, run.read_metrics(), "ee")
    page = run.report_html.read_text()
    assert '<section id="early_exit">' in page and EVIL not in page  # shown as text, never as markup
    assert "## Early exits" in run.report_md.read_text()
