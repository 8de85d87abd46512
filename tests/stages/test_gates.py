"""The export's quantization gates as plain logic: default limits per precision, what a recipe can
relax or turn off, "pass" only where a gate ran, and no judgement of an untrained model's files."""

from __future__ import annotations

import pytest

from edge_pipeline.stages.quantize import DEFAULT_GATES
from edge_pipeline.stages.runners.gates import gate_failures, gate_limits, gate_result, relax_hint

DEFAULTS = {"max_accuracy_drop": "default", "min_agreement": "default"}  # a recipe that sets no gate
FACTS = {"accuracy": 0.90, "agreement": 0.95}


@pytest.mark.parametrize("gates, expected", [
    ({}, []),
    ({"max_accuracy_drop": None, "min_agreement": None}, []),
    ({"max_accuracy_drop": 0.05, "min_agreement": 0.95}, []),  # both exactly at the limit pass
    ({"max_accuracy_drop": 0.01}, ["accuracy 90.00% is 5.00 points below float 95.00% (max_accuracy_drop 0.01 = 1.00 points)"]),
    ({"min_agreement": 0.98}, ["top-1 agreement with float 95.00% < min_agreement 98.00%"]),
])
def test_gate_failures(gates, expected):
    assert gate_failures(FACTS, 0.95, gates) == expected


def test_both_gates_can_fail_at_once():
    assert len(gate_failures(FACTS, 0.99, {"max_accuracy_drop": 0.0, "min_agreement": 0.99})) == 2


def test_default_gates_fail_an_int8_file_at_chance_from_a_trained_model():
    """The issue's resnet20: 99.63% in float, its int8 file at 10.00% (agreement 10%) once its channel
    scales were changed without changing its function. No gate in the recipe: the defaults catch it."""
    result = gate_result({"accuracy": 0.10, "agreement": 0.10}, 0.9963, DEFAULTS, "int8", 10000, untrained=False)
    assert result["status"] == "fail" and result["reason"] is None
    assert [(c["gate"], c["limit"], c["default"], c["passed"]) for c in result["checks"]] == [
        ("max_accuracy_drop", 0.03, True, False), ("min_agreement", 0.90, True, False)]
    assert result["failures"] == [
        "accuracy 10.00% is 89.63 points below float 99.63% (max_accuracy_drop 0.03 = 3.00 points, the default for int8)",
        "top-1 agreement with float 10.00% < min_agreement 90.00% (the default for int8)",
    ]
    hint = relax_hint(result, "int8")
    assert "relax the default int8 gate: set quantize.max_accuracy_drop or quantize.min_agreement" in hint
    assert "null turns it off" in hint


def test_default_agreement_floor_catches_a_file_that_keeps_its_accuracy_by_luck():
    # The second file agreed with float on 2.6% of images.
    result = gate_result({"accuracy": 0.97, "agreement": 0.026}, 0.99, DEFAULTS, "int8", 270, untrained=False)
    assert result["status"] == "fail" and len(result["failures"]) == 1 and "min_agreement" in result["failures"][0]


@pytest.mark.parametrize("precision, float_accuracy, facts", [
    ("int8", 0.918519, {"accuracy": 0.918519, "agreement": 0.985185}),     # the quickstart: 0.0 points lost
    ("int8", 0.888889, {"accuracy": 0.874, "agreement": 0.9926}),          # 1.49 points lost, still sound
    ("float16", 0.888889, {"accuracy": 0.885185, "agreement": 0.996296}),  # one image flipped of 270
    ("dynamic_int8", 0.918519, {"accuracy": 0.91, "agreement": 0.97}),
    ("int16x8", 0.918519, {"accuracy": 0.918519, "agreement": 1.0}),
])
def test_sound_files_clear_the_defaults_and_say_which_limits_they_met(precision, float_accuracy, facts):
    result = gate_result(facts, float_accuracy, DEFAULTS, precision, 270, untrained=False)
    assert result["status"] == "pass" and result["failures"] == []
    assert {c["gate"]: c["limit"] for c in result["checks"]} == DEFAULT_GATES[precision]
    assert all(c["default"] and c["passed"] for c in result["checks"])


def test_a_recipe_relaxes_a_gate_or_turns_it_off():
    broken = {"accuracy": 0.10, "agreement": 0.10}
    relaxed = gate_result(broken, 0.9963, {"max_accuracy_drop": 0.95, "min_agreement": 0.05}, "int8", 270, False)
    assert relaxed["status"] == "pass" and not any(c["default"] for c in relaxed["checks"])
    assert relax_hint(relaxed, "int8") == ""
    one_off = gate_result(broken, 0.9963, {"max_accuracy_drop": None, "min_agreement": 0.05}, "int8", 270, False)
    assert one_off["status"] == "pass" and [c["gate"] for c in one_off["checks"]] == ["min_agreement"]
    off = gate_result(broken, 0.9963, {"max_accuracy_drop": None, "min_agreement": None}, "int8", 270, False)
    assert off["status"] == "off" and off["checks"] == [] and "null" in off["reason"]


def test_an_explicit_gate_that_fails_is_the_recipes_own_no_relax_hint():
    result = gate_result({"accuracy": 0.85, "agreement": 0.99}, 0.9, {"max_accuracy_drop": 0.01, "min_agreement": "default"},
                         "int8", 270, untrained=False)
    assert result["status"] == "fail" and "the default" not in result["failures"][0]
    assert relax_hint(result, "int8") == ""


def test_untrained_float_model_makes_the_gates_not_applicable():
    # Even a failing explicit gate cannot judge an int8 copy of noise.
    result = gate_result({"accuracy": 0.08, "agreement": 0.5}, 0.10, {"max_accuracy_drop": 0.0, "min_agreement": 0.99},
                         "int8", 270, untrained=True)
    assert result["status"] == "not applicable" and result["checks"] == [] and result["failures"] == []
    assert "untrained" in result["reason"]


def test_default_limits_never_ask_for_more_than_two_test_images():
    # 50 test images: one flipped prediction is 2 points, 98% agreement.
    limits = gate_limits(DEFAULTS, "float16", 50)
    assert limits == {"max_accuracy_drop": {"limit": 0.04, "default": True}, "min_agreement": {"limit": 0.96, "default": True}}
    one_flip = {"accuracy": 0.88, "agreement": 0.98}
    assert gate_result(one_flip, 0.90, DEFAULTS, "float16", 50, untrained=False)["status"] == "pass"
    # An explicit limit is exact, and a missing gate (older plans) means its default.
    assert gate_limits({"max_accuracy_drop": 0.01}, "float16", 50) == {
        "max_accuracy_drop": {"limit": 0.01, "default": False}, "min_agreement": {"limit": 0.96, "default": True}}
    assert gate_limits(DEFAULTS, "int8", 270) == {"max_accuracy_drop": {"limit": 0.03, "default": True},
                                                  "min_agreement": {"limit": 0.9, "default": True}}
