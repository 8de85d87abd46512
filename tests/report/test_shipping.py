"""The file to ship per device (`report.shipping.choose_file`) on facts dicts, the gate record
shapes it reads, and the gains against the baseline, in the run report and in `compare`."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from edge_pipeline.cli import main
from edge_pipeline.report import build_sections
from edge_pipeline.report.doc import Bullets
from edge_pipeline.report.records import ModelRecord
from edge_pipeline.report.shipping import baseline_notes, choose_file, gains, gate_results, gate_status
from tests.report.fabricated import METRICS, PROFILES, fabricated_run


def fact(precision: str, median: float | None, gate=None, accuracy: float = 0.97, size: int = 1000,
         peak: float | None = 50.0, **extra) -> dict:
    return {"precision": precision, "path": f"06-export/model_{precision}.tflite", "median_ms": median,
            "accuracy": accuracy, "size_bytes": size, "peak_mb": peak, "gate": gate, **extra}


# -- the decision ----------------------------------------------------------------------------

def test_the_fastest_passing_file_ships_and_the_line_says_why():
    rec = choose_file("host", [fact("float32", 0.024), fact("int8", 0.077, "pass")])
    assert rec["ship"] == "06-export/model_float32.tflite" and rec["precision"] == "float32"
    assert rec["reason"] == "ship float32: 0.024 ms vs int8 0.077 ms (int8 3.2x slower here); both pass the gates"
    assert rec["device"] == "host" and rec["median_ms"] == 0.024 and rec["excluded"] == {}


def test_int8_ships_where_it_is_faster_and_passes():
    rec = choose_file("pi", [fact("float32", 4.0), fact("int8", 2.7, {"status": "pass", "checks": []})])
    assert rec["precision"] == "int8"
    assert rec["reason"].startswith("ship int8: 2.700 ms vs float32 4.000 ms (float32 1.48x slower here)")


@pytest.mark.parametrize("gate", [["accuracy 10.00% is 87.0 points below float"],
                                  {"status": "fail", "reason": "accuracy 10.00% is 87.0 points below float"}],
                         ids=["old list of failures", "new status dict"])
def test_a_failing_gate_excludes_a_faster_file(gate):
    rec = choose_file("host", [fact("float32", 0.5), fact("int8", 0.1, gate)])
    assert rec["precision"] == "float32"
    assert rec["excluded"] == {"int8": "fails the gates (accuracy 10.00% is 87.0 points below float)"}
    assert "int8 0.100 ms (int8 5.0x faster here)" in rec["reason"]
    assert "int8 excluded: fails the gates" in rec["reason"]


def test_a_reduced_file_no_gate_judged_does_not_ship_but_float32_needs_none():
    untrained = {"status": "not applicable", "reason": "the float model is untrained (chance accuracy)"}
    rec = choose_file("host", [fact("float32", 0.5, untrained), fact("int8", 0.1, untrained), fact("float16", 0.2)])
    assert rec["precision"] == "float32"
    assert rec["excluded"] == {"int8": "was not judged by any gate (the float model is untrained (chance accuracy))",
                               "float16": "has no gate result"}
    assert choose_file("host", [fact("float32", 0.5, {"status": "fail"})])["ship"] is None


def test_memory_limit_of_the_device():
    facts = [fact("float32", 0.5, peak=700.0), fact("int8", 0.2, "pass", peak=300.0)]
    rec = choose_file("board", facts, memory_mb=512)
    assert rec["precision"] == "int8" and "fits the device's 512 MB (peak 300.0 MB)" in rec["reason"]
    facts[1]["peak_mb"] = 600.0
    rec = choose_file("board", facts, memory_mb=512)
    assert rec["ship"] is None and rec["excluded"]["int8"] == "needs 600.0 MB, over the device's 512 MB"
    assert rec["reason"].startswith("nothing to ship on board: float32 needs 700.0 MB")
    # Without a limit memory is no criterion, and the line does not talk about it.
    rec = choose_file("host", facts)
    assert rec["precision"] == "int8" and "MB" not in rec["reason"]


def test_ties_go_to_accuracy_then_size_then_the_higher_precision():
    rec = choose_file("host", [fact("int8", 0.1, "pass", accuracy=0.99), fact("float32", 0.1, accuracy=0.98)])
    assert rec["precision"] == "int8"
    assert "(float32 as fast here)" in rec["reason"] and "same latency as float32: the more accurate (99.00% vs 98.00%)" in rec["reason"]
    rec = choose_file("host", [fact("float32", 0.1, size=4000), fact("int8", 0.1, "pass", size=1000)])
    assert rec["precision"] == "int8" and "the smaller file (1000 B vs 3.9 KB)" in rec["reason"]
    rec = choose_file("host", [fact("int8", 0.1, "pass"), fact("float32", 0.1)])
    assert rec["precision"] == "float32" and "the higher precision" in rec["reason"]


def test_missing_latency_excludes_the_file_and_nothing_measured_ships_nothing():
    rec = choose_file("host", [fact("float32", None), fact("int8", 0.3, "pass")])
    assert rec["precision"] == "int8" and rec["excluded"] == {"float32": "has no latency measured"}
    rec = choose_file("host", [fact("float32", None)])
    assert rec["ship"] is None and rec["precision"] is None
    assert rec["reason"] == "nothing to ship on host: float32 has no latency measured"
    assert choose_file("host", [])["reason"] == "nothing to ship on host: no file was profiled"


def test_other_outputs_on_the_device_exclude_the_file_and_a_single_file_says_so():
    rec = choose_file("qemu", [fact("float32", 1.4), fact("int8", 0.15, "pass", outputs_match=False)])
    assert rec["precision"] == "float32"
    assert rec["excluded"] == {"int8": "gives other outputs on the device than on this host"}
    rec = choose_file("host", [fact("int8", 0.2, "pass", valid=False)])
    assert rec["reason"] == ("ship int8: 0.200 ms; int8 is the only precision profiled; "
                             "int8's timing is marked invalid (noisy): profile again to confirm")


def test_gate_record_shapes_old_and_new():
    assert gate_status("int8", "pass") == ("pass", "")
    assert gate_status("int8", ["a", "b"]) == ("fail", "a; b")
    assert gate_status("int8", {"status": "fail", "checks": [{"gate": "x"}], "reason": "why"}) == ("fail", "why")
    assert gate_status("int8", None) == ("unknown", "")
    assert gate_status("float32", None) == ("reference", "")
    per_precision = {"int8": {"status": "pass"}, "float16": {"status": "fail"}}
    assert gate_results({"max_accuracy_drop": 0.01, "results": {"int8": "pass"}}) == {"int8": "pass"}
    assert gate_results(per_precision) == per_precision
    assert gate_results(None) == {}


# -- gains against the baseline ----------------------------------------------------------------

def test_gains_pair_each_shipped_file_with_the_baseline_of_its_precision_and_float32():
    def rec(model, precision, median, size, baseline=False, device="host"):
        return ModelRecord(model=model, precision=precision, median_ms=median, size_bytes=size, baseline=baseline, device=device)

    records = [rec("model_float32", "float32", 0.02, 200), rec("model_int8", "int8", 0.05, 100),
               rec("baseline_float32", "float32", 0.1, 1000, True), rec("baseline_int8", "int8", 0.2, 400, True),
               rec("model_int8", "int8", 3.0, 100, device="pi")]
    found = {(g.shipped.device, g.shipped.model): g for g in gains(records)}
    assert set(found) == {("host", "model_float32"), ("host", "model_int8"), ("pi", "model_int8")}
    int8 = found[("host", "model_int8")]
    assert int8.speedup(int8.same, int8.shipped) == pytest.approx(4.0)
    assert int8.size_ratio(int8.same, int8.shipped) == pytest.approx(0.25)
    assert int8.speedup(int8.float32, int8.shipped) == pytest.approx(2.0)
    assert int8.size_ratio(int8.float32, int8.shipped) == pytest.approx(0.1)
    pi = found[("pi", "model_int8")]
    assert pi.same is None and pi.speedup(pi.same, pi.shipped) is None  # no baseline measured there


def test_baseline_notes_say_why_a_comparison_is_missing():
    stages = [{"type": "profile", "baseline": {"model_stage": "train", "same_as_shipped": True, "files": {}}},
              {"type": "profile", "baseline": {"model_stage": "train", "files": {}, "failed": {"int8": "refused"},
                                               "profile_failed": {"pi": {"int8": "not converted", "float32": "timeout"}}}}]
    assert baseline_notes({"stages": stages}) == [
        "No baseline comparison: the shipped files are converted from the train stage's model (no model stage after it).",
        "Baseline int8 (the train stage's model) could not be converted, so no int8 speed-up: refused",
        "Baseline float32 could not be profiled on pi: timeout",
    ]
    assert baseline_notes({"stages": [{"type": "export"}]}) == []


# -- in the report and in compare (a written run folder) ------------------------------------------

BASELINE_MEDIANS = {"float32": 0.045, "int8": 0.028}
BASELINE_SIZES = {"float32": 112380, "int8": 37376}


def with_baseline(root: Path, recommendations: bool = True) -> Path:
    """The fabricated run plus a profiled baseline on the host, as the profile stage writes it."""
    run = fabricated_run(root)
    metrics = json.loads((run / "metrics.json").read_text())
    profile_entry = metrics["stages"][-1]
    profile_entry["baseline_profiles"] = []
    profile_entry["baseline"] = {"model_stage": "train", "failed": {}, "reused": False, "files": {
        p: {"path": f"baseline/baseline_{p}.tflite", "size_bytes": BASELINE_SIZES[p]} for p in BASELINE_MEDIANS}}
    for precision, median in BASELINE_MEDIANS.items():
        profile = json.loads(json.dumps(PROFILES[f"host__model_{precision}.json"]))
        profile |= {"model": f"baseline_{precision}.tflite", "model_size_bytes": BASELINE_SIZES[precision]}
        profile["latency_ms"]["median"] = median
        (run / "profiles" / f"host__baseline_{precision}.json").write_text(json.dumps(profile))
        profile_entry["baseline_profiles"].append(f"profiles/host__baseline_{precision}.json")
    if recommendations:
        profile_entry["recommendations"] = [{"device": "host", "ship": "06-export/model_float32.tflite", "precision": "float32",
                                             "reason": "ship float32: recorded by the profile stage"}]
    (run / "metrics.json").write_text(json.dumps(metrics))
    return run


def row_of(markdown: str, device: str, model: str) -> list[str]:
    line = next(line for line in markdown.splitlines() if line.startswith(f"| {device} | {model} | ") and "x |" in line)
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_report_shows_the_gains_from_the_profiles_and_the_recorded_file_to_ship(tmp_path):
    run = with_baseline(tmp_path / "run")
    section = next(s for s in build_sections(run, json.loads((run / "metrics.json").read_text()), plots=False)
                   if s.key == "devices")
    md = section.markdown
    assert "- **host**: ship float32: recorded by the profile stage. File: 06-export/model_float32.tflite." in md
    shipped = {p: PROFILES[f"host__model_{p}.json"] for p in BASELINE_MEDIANS}
    for precision in BASELINE_MEDIANS:
        ship = shipped[precision]
        cells = row_of(md, "host", f"model_{precision}")
        assert cells[3] == f"{BASELINE_MEDIANS[precision]:.3f}"
        assert cells[4] == f"{BASELINE_MEDIANS[precision] / ship['latency_ms']['median']:.2f}x"
        assert cells[5] == f"{ship['model_size_bytes'] / BASELINE_SIZES[precision]:.2f}x"
        assert cells[7] == f"{BASELINE_MEDIANS['float32'] / ship['latency_ms']['median']:.2f}x"
        assert cells[8] == f"{ship['model_size_bytes'] / BASELINE_SIZES['float32']:.2f}x"
    # The baseline files are listed for reference, never marked best.
    baseline_row = next(line for line in md.splitlines() if line.startswith("| host | baseline_int8 |"))
    assert "fastest" not in baseline_row and "smallest" not in baseline_row
    assert not re.search(r"\| qemu-aarch64 \(emulated\) \| model_int8 \| [\d.]+ \| [\d.]+ \| [\d.]+x", md)  # no baseline there


def test_an_older_run_gets_the_rule_applied_to_its_profiles_and_gates(tmp_path):
    """metrics.json without recommendations (written before this): the same rule, memory unknown."""
    run = fabricated_run(tmp_path / "run")
    section = next(s for s in build_sections(run, METRICS, plots=False) if s.key == "devices")
    bullets = section.blocks[2]
    assert isinstance(bullets, Bullets)
    host = next(item for item in bullets.items if item.startswith("**host**"))
    assert host == ("**host**: ship float32: 0.009 ms vs int8 0.014 ms (int8 1.56x slower here); int8 excluded: fails the "
                    "gates (accuracy drop 1.49 points > 1.00). File: 06-export/model_float32.tflite.")
    assert "No baseline" not in section.markdown and "speed-up" not in section.markdown


def test_compare_shows_the_file_to_ship_and_the_gains_per_run(tmp_path, capsys):
    a = with_baseline(tmp_path / "a")
    b = fabricated_run(tmp_path / "b")
    metrics = json.loads((b / "metrics.json").read_text())
    metrics["recipe"] = "other"
    metrics["stages"][-1]["baseline"] = {"model_stage": "train", "files": {}, "failed": {"int8": "the converter refused it"}}
    (b / "metrics.json").write_text(json.dumps(metrics))
    out = tmp_path / "cmp"
    assert main(["compare", str(a), str(b), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "tiny / host: ship float32: recorded by the profile stage. File: 06-export/model_float32.tflite." in printed
    assert "other / qemu-aarch64 (emulated: relative only): ship float32: 1.380 ms" in printed
    assert "other: Baseline int8 (the train stage's model) could not be converted" in printed
    md = (out / "compare.md").read_text()
    assert "**tiny / host**: ship float32" in md and "**other / host**: ship float32: 0.009 ms" in md
    data = json.loads((out / "compare.json").read_text())
    # tiny recorded its choice (host only); other predates that: the rule on its profiles, per device.
    assert {(r["run"], r["device"]) for r in data["recommendations"]} == {("tiny", "host"), ("other", "host"), ("other", "qemu-aarch64")}
    gain = next(g for g in data["gains"] if g["run"] == "tiny" and g["precision"] == "int8")
    assert gain["speedup"] == pytest.approx(BASELINE_MEDIANS["int8"] / PROFILES["host__model_int8.json"]["latency_ms"]["median"])
    assert all(g["speedup"] is None for g in data["gains"] if g["run"] == "other")
    shutil.rmtree(out)
