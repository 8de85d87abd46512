"""What the report says about gates and untrained models: "pass" only where a gate ran, which
limits were defaults, "untrained" instead of a result, and older run folders still rendered."""

from __future__ import annotations

import copy

import pytest

from edge_pipeline.report.doc import BAD, Paragraph
from edge_pipeline.report.quantization_section import export_blocks, fidelity_table
from edge_pipeline.report.records import FLOAT_UNTRAINED_NOTE, UNTRAINED_NOTE, model_facts
from edge_pipeline.report.table import batchnorm_line

from .fabricated import DETAILS, METRICS

EXPORT = DETAILS["06-export"]
CHECKS = [{"gate": "max_accuracy_drop", "limit": 0.03, "default": True, "value": 0.0149, "passed": True},
          {"gate": "min_agreement", "limit": 0.9, "default": True, "value": 0.9926, "passed": True}]


def _export(results, configured=None, **extra):
    details = copy.deepcopy(EXPORT)
    details["gates"] = {**(configured or {}), "results": results}
    return {**details, **extra}


def _gate_cell(details):
    (_, int8) = fidelity_table(details).rows
    return int8[-1]


@pytest.mark.parametrize("results, configured, shown", [
    # The current record: status, the checks that ran, failures, reason.
    ({"int8": {"status": "pass", "checks": CHECKS, "failures": [], "reason": None}}, {}, "pass"),
    ({"int8": {"status": "off", "checks": [], "failures": [], "reason": "..."}}, {}, "off (null in the recipe)"),
    ({"int8": {"status": "not applicable", "checks": [], "failures": [], "reason": "the float model is untrained (...)"}},
     {}, "not applicable: untrained float model"),
    # Older run folders: "pass" was written whether or not a gate was set, failures as a list.
    ({"int8": "pass"}, {"max_accuracy_drop": None, "min_agreement": None}, "no gate set"),
    ({"int8": "pass"}, {"max_accuracy_drop": 0.01, "min_agreement": None}, "pass"),
    ({"int8": []}, {}, "pass"),
])
def test_gate_cell_says_pass_only_where_a_gate_ran(results, configured, shown):
    cell = _gate_cell(_export(results, configured))
    assert cell.text == shown and cell.flag is None


@pytest.mark.parametrize("result", [
    {"status": "fail", "checks": CHECKS, "failures": ["top-1 agreement with float 10.00% < min_agreement 90.00%"],
     "reason": None},
    ["top-1 agreement with float 10.00% < min_agreement 90.00%"],  # an older run
])
def test_failed_gate_is_marked_with_its_reasons(result):
    cell = _gate_cell(_export({"int8": result}))
    assert cell.text == "FAIL: top-1 agreement with float 10.00% < min_agreement 90.00%" and cell.flag == BAD


def test_limits_and_which_were_defaults_are_listed():
    checks = [CHECKS[0], {**CHECKS[1], "limit": 0.5, "default": False}]
    blocks = export_blocks({"name": "export"}, _export({"int8": {"status": "pass", "checks": checks, "failures": []}}))
    texts = [b.text for b in blocks if isinstance(b, Paragraph)]
    assert "Gate limits: int8: accuracy drop <= 3.00 points (default), agreement >= 50.00%." in texts


def test_untrained_float_model_is_said_not_shown_as_a_result():
    details = _export({"int8": {"status": "not applicable", "checks": [], "failures": [], "reason": "untrained"}},
                      untrained=True, chance_accuracy=0.1, float_accuracy=0.1)
    texts = [b.text for b in export_blocks({"name": "export"}, details) if isinstance(b, Paragraph)]
    assert any(t.startswith("**Untrained float model**: its test accuracy 10.00% is at chance (10.00%)") for t in texts)
    assert not any(t.startswith("Gate limits") for t in texts)
    old = export_blocks({"name": "export"}, EXPORT)  # an older run: no untrained record, no limits
    assert not any(isinstance(b, Paragraph) and "Untrained" in b.text for b in old)


def test_stage_table_notes_models_at_chance_and_files_exported_from_one():
    notes = {(r.stage, r.precision if r.file else "torch"): r.notes for r in model_facts(METRICS)}
    assert notes[("prune", "torch")] == [UNTRAINED_NOTE]  # 10% on 10 classes
    assert notes[("train", "torch")] == [] and notes[("restructure", "torch")] == []  # 22.96% is more than luck
    assert notes[("export", "int8")] == []
    untrained = copy.deepcopy(METRICS)
    export = next(s for s in untrained["stages"] if s["name"] == "export")
    export["artifacts"][0]["accuracy"] = 0.1
    notes = {r.precision: r.notes for r in model_facts(untrained) if r.file}
    assert notes == {"float32": [FLOAT_UNTRAINED_NOTE], "int8": [FLOAT_UNTRAINED_NOTE]}
    at_chance = copy.deepcopy(METRICS)
    next(s for s in at_chance["stages"] if s["name"] == "export")["artifacts"][1]["accuracy"] = 0.1
    assert {r.precision: r.notes for r in model_facts(at_chance) if r.file} == {"float32": [], "int8": ["chance accuracy"]}
    no_data = {k: v for k, v in METRICS.items() if k != "data"}  # older metrics.json: nothing to compare with
    assert all(r.notes == [] for r in model_facts(no_data))


def test_batchnorm_line_names_the_stage_and_the_accuracy_before_and_after():
    check = {"refreshed": True, "kept": True, "eval_accuracy": 0.12, "batch_statistics_accuracy": 0.85, "check_samples": 256,
             "val_accuracy_before": 0.1185, "val_accuracy_after": 0.8074}
    assert batchnorm_line("train", check) == (
        "**train**: BatchNorm statistics re-estimated (eval mode 12.00% vs 85.00% with batch statistics on 256 "
        "validation images): validation accuracy 11.85% -> 80.74%.")
    assert "but not kept" in (batchnorm_line("finetune", {**check, "kept": False}) or "")
    assert batchnorm_line("train", {"refreshed": False, "stale": False}) is None
