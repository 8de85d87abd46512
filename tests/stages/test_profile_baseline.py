"""The profile stage also measures the trained baseline, converted once per run into `baseline/`,
and names the file to ship per device (real runs: 16 px digits, a short-budget host device)."""

from __future__ import annotations

import json
import shutil

import pytest

from edge_pipeline.artifacts import sha256_file
from edge_pipeline.cli import main
from edge_pipeline.report.shipping import gate_results, gate_status, passes_gates
from tests.conftest import TINY_HEAD, write

STAGES = """\
stages:
  - train: {{epochs: 2, lr: 0.05}}
  - prune: {{method: l1, ratio: 0.5, round_to: 4}}
  - finetune: {{epochs: 2, lr: 0.01}}
  - quantize: {{mode: int8, calibration_samples: 64}}
  - export: {{format: tflite}}
  - profile: {{devices: ['{device}'], outputs_check: 0}}
"""


def metrics_of(out):
    return json.loads((out / "metrics.json").read_text())


def profile_entry(out):
    return next(s for s in metrics_of(out)["stages"] if s["type"] == "profile")


def median(out, rel):
    return json.loads((out / rel).read_text())["latency_ms"]["median"]


def gains_row(report: str, model: str) -> list[str]:
    section = report[report.index("**Against the baseline**"):]
    line = next(line for line in section.splitlines() if line.startswith(f"| fast-host | {model} | "))
    return [cell.strip() for cell in line.strip("|").split("|")]


def expected_ship(out) -> str:
    """The fastest precision, measured in this folder, among those the export's gates let through."""
    metrics = metrics_of(out)
    export = next(s for s in metrics["stages"] if s["type"] == "export")
    gates = gate_results(json.loads((out / "05-export" / "details.json").read_text()).get("gates"))
    passing = [a for a in export["artifacts"]
               if passes_gates(a["precision"], gate_status(a["precision"], gates.get(a["precision"]))[0])]
    fastest = min(passing, key=lambda a: median(out, f"profiles/fast-host__{a['path'].split('/')[-1][:-7]}.json"))
    return fastest["precision"]


@pytest.mark.e2e
@pytest.mark.slow  # two onnx2tf conversions (shipped model and baseline), then four short reruns
def test_profile_stage_measures_the_baseline_once_and_names_the_file_to_ship(tmp_path, fast_device, capsys):
    recipe = write(tmp_path / "r.yaml", TINY_HEAD + STAGES.format(device=fast_device))
    out = tmp_path / "run"
    assert main(["run", str(recipe), "--out", str(out)]) == 0
    printed = capsys.readouterr().out

    # The baseline: the train stage's model in the shipped precisions, profiled like the shipped files.
    entry = profile_entry(out)
    assert entry["baseline_profiles"] == ["profiles/fast-host__baseline_float32.json", "profiles/fast-host__baseline_int8.json"]
    assert entry["baseline"]["model_stage"] == "train" and entry["baseline"]["failed"] == {}
    artifacts = {a["precision"]: a for s in metrics_of(out)["stages"] for a in s.get("artifacts", [])}
    for precision in ("float32", "int8"):
        tflite = out / "baseline" / f"baseline_{precision}.tflite"
        profile = json.loads((out / "profiles" / f"fast-host__baseline_{precision}.json").read_text())
        assert profile["model"] == tflite.name and profile["model_sha256"] == sha256_file(tflite)
        assert profile["threads"] == json.loads((out / "profiles" / f"fast-host__model_{precision}.json").read_text())["threads"]
        assert entry["baseline"]["files"][precision] == {"path": f"baseline/{tflite.name}", "size_bytes": tflite.stat().st_size}
        # The unpruned model's file is the bigger one.
        assert tflite.stat().st_size > artifacts[precision]["size_bytes"]

    # The gains in the report are the ratios of the medians and sizes measured in this folder.
    report = (out / "report.md").read_text()
    for precision in ("float32", "int8"):
        shipped, base = f"profiles/fast-host__model_{precision}.json", f"profiles/fast-host__baseline_{precision}.json"
        cells = gains_row(report, f"model_{precision}")
        assert cells[4] == f"{median(out, base) / median(out, shipped):.2f}x"
        assert cells[5] == f"{artifacts[precision]['size_bytes'] / entry['baseline']['files'][precision]['size_bytes']:.2f}x"
        assert cells[7] == f"{median(out, 'profiles/fast-host__baseline_float32.json') / median(out, shipped):.2f}x"

    # The file to ship: measured, never assumed; in metrics.json (stage entry and top level), report and terminal.
    (rec,) = entry["recommendations"]
    assert metrics_of(out)["recommendations"] == [rec]
    precision = expected_ship(out)
    assert rec["device"] == "fast-host" and rec["precision"] == precision and rec["ship"] == artifacts[precision]["path"]
    assert rec["reason"].startswith(f"ship {precision}: {median(out, f'profiles/fast-host__model_{precision}.json'):.3f} ms vs ")
    assert f"**fast-host**: {rec['reason']}. File: {rec['ship']}." in report
    assert f"fast-host: {rec['reason']}. File: {rec['ship']}." in printed

    # Profiles are measurements, cached with the stage: an unchanged rerun measures nothing.
    before = {p.name: p.read_bytes() for p in (out / "profiles").iterdir()}
    assert main(["run", str(recipe), "--out", str(out)]) == 0
    assert {s["status"] for s in metrics_of(out)["stages"]} == {"cached"}
    assert {p.name: p.read_bytes() for p in (out / "profiles").iterdir()} == before

    # Re-profiling reuses the converted baseline (no second conversion).
    record = out / "baseline" / "stage.json"
    stamp = record.stat().st_mtime_ns
    assert main(["run", str(recipe), "--out", str(out), "--force", "profile"]) == 0
    entry = profile_entry(out)
    assert entry["status"] == "done" and entry["baseline"]["reused"] is True
    assert record.stat().st_mtime_ns == stamp and len(entry["baseline_profiles"]) == 2
    capsys.readouterr()

    # baseline: false profiles the shipped files only, and still names the file to ship.
    assert main(["run", str(recipe), "--out", str(out), "--set", "stages.profile.baseline=false"]) == 0
    entry = profile_entry(out)
    assert "baseline_profiles" not in entry and "baseline" not in entry
    assert len(entry["profiles"]) == 2 and entry["recommendations"][0]["precision"] == expected_ship(out)
    assert "Against the baseline" not in (out / "report.md").read_text()

    # A baseline that cannot be converted is recorded and reported; the run still succeeds, and a
    # file the tool did not write (here, in the way of its temp folder) is left alone.
    shutil.rmtree(out / "baseline")
    (out / ".baseline.tmp").write_text("not ours")
    capsys.readouterr()
    assert main(["run", str(recipe), "--out", str(out), "--force", "profile"]) == 0
    entry = profile_entry(out)
    assert set(entry["baseline"]["failed"]) == {"float32", "int8"} and entry["baseline_profiles"] == []
    assert entry["recommendations"][0]["precision"] == expected_ship(out)
    assert "Baseline float32 (the train stage's model) could not be converted" in (out / "report.md").read_text()
    assert "Baseline int8 (the train stage's model) could not be converted" in capsys.readouterr().out
    assert (out / ".baseline.tmp").read_text() == "not ours"
