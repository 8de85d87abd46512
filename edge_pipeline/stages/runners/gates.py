"""The export stage's quantization gates: which limits apply to a reduced file, and what they found.

Per precision the export records what actually ran (details.json, `gates.results`):
`{"status": "pass" | "fail" | "not applicable" | "off", "checks": [...], "failures": [...], "reason": ...}`
where each check is `{"gate", "limit", "default", "value", "passed"}`. "pass" only where a gate ran:
"off" when the recipe turned both gates off (null), "not applicable" when the float model is at
chance accuracy (an int8 copy of an untrained model cannot be judged against it).
Torch-free: plain facts in, plain records out.
"""

from __future__ import annotations

from typing import Any

from ..quantize import DEFAULT_GATES, GATES

PASS, FAIL, NOT_APPLICABLE, OFF = "pass", "fail", "not applicable", "off"
# A default limit never asks for more than this many test images can resolve: on 50 images one
# flipped prediction is 2 points, which must not fail a sound float16 file (limit 1 point).
RESOLUTION_IMAGES = 2
_EPSILON = 1e-9  # a value exactly at its limit passes (the figures are rounded to 6 digits)


def gate_limits(configured: dict[str, Any], precision: str, samples: int) -> dict[str, dict[str, Any]]:
    """{gate: {"limit": x, "default": bool}} for the gates that apply to `precision`; a gate the
    recipe set to null (off) is absent. `configured` is the quantize plan's `gates` (a number,
    "default", or None per gate; a missing gate means default)."""
    limits = {}
    for gate in GATES:
        value = configured.get(gate, "default")
        if value is None:
            continue
        if value == "default":
            limits[gate] = {"limit": _default_limit(gate, precision, samples), "default": True}
        else:
            limits[gate] = {"limit": float(value), "default": False}
    return limits


def _default_limit(gate: str, precision: str, samples: int) -> float:
    base = DEFAULT_GATES[precision][gate]
    resolution = RESOLUTION_IMAGES / max(samples, 1)
    limit = max(base, resolution) if gate == "max_accuracy_drop" else min(base, 1.0 - resolution)
    return round(limit, 6)


def gate_checks(facts: dict[str, Any], float_accuracy: float, limits: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One check per applying gate: the measured value against its limit."""
    checks = []
    if "max_accuracy_drop" in limits:
        limit = limits["max_accuracy_drop"]
        drop = float_accuracy - facts["accuracy"]
        checks.append({"gate": "max_accuracy_drop", **limit, "value": round(drop, 6),
                       "passed": drop <= limit["limit"] + _EPSILON})
    if "min_agreement" in limits:
        limit = limits["min_agreement"]
        checks.append({"gate": "min_agreement", **limit, "value": facts["agreement"],
                       "passed": facts["agreement"] >= limit["limit"] - _EPSILON})
    return checks


def failure_message(check: dict[str, Any], facts: dict[str, Any], float_accuracy: float, precision: str) -> str:
    limit = check["limit"]
    default = f", the default for {precision}" if check.get("default") else ""
    if check["gate"] == "max_accuracy_drop":
        return (f"accuracy {facts['accuracy']:.2%} is {check['value'] * 100:.2f} points below float {float_accuracy:.2%} "
                f"(max_accuracy_drop {limit:g} = {limit * 100:.2f} points{default})")
    return f"top-1 agreement with float {facts['agreement']:.2%} < min_agreement {limit:.2%}" + (f" ({default[2:]})" if default else "")


def gate_result(facts: dict[str, Any], float_accuracy: float, configured: dict[str, Any], precision: str,
                samples: int, untrained: bool) -> dict[str, Any]:
    """What the gates found for one reduced file (see the module docstring for the record)."""
    if untrained:
        return {"status": NOT_APPLICABLE, "checks": [], "failures": [],
                "reason": f"the float model is untrained (test accuracy {float_accuracy:.2%} is at chance): "
                          "a reduced copy cannot be judged against it"}
    limits = gate_limits(configured, precision, samples)
    if not limits:
        return {"status": OFF, "checks": [], "failures": [],
                "reason": "the recipe turned both gates off (max_accuracy_drop and min_agreement are null)"}
    checks = gate_checks(facts, float_accuracy, limits)
    failures = [failure_message(c, facts, float_accuracy, precision) for c in checks if not c["passed"]]
    return {"status": FAIL if failures else PASS, "checks": checks, "failures": failures, "reason": None}


def gate_failures(facts: dict[str, Any], float_accuracy: float, gates: dict[str, float | None]) -> list[str]:
    """Why a reduced file fails explicit limits ({gate: limit}; absent or None: no such gate)."""
    limits = {g: {"limit": float(v), "default": False} for g, v in gates.items() if v is not None}
    return [failure_message(c, facts, float_accuracy, "") for c in gate_checks(facts, float_accuracy, limits) if not c["passed"]]


def relax_hint(result: dict[str, Any], precision: str) -> str:
    """The fix for failed default gates: set them in the recipe (a failed explicit gate is the recipe's own)."""
    failed = [c for c in result["checks"] if not c["passed"] and c.get("default")]
    if not failed:
        return ""
    settings = " or ".join(f"quantize.{c['gate']}" for c in failed)
    return f"; or, if this loss is acceptable, relax the default {precision} gate: set {settings} in the recipe (null turns it off)"
