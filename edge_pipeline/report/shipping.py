"""Which file to ship on a device, and what the recipe bought there against the trained baseline.

The decision (`choose_file`) works on plain facts dicts, one per profiled precision of the shipped
model on one device (see `candidate`), so it is the same at the end of a profile stage (written to
metrics.json), in the report and in `compare`. The rule: the fastest precision (lowest median
latency measured on that device) among those that
- pass the accuracy gates (gate status "pass"; float32 is the reference, no gate applies to it, so
  it is excluded only by a failed gate);
- fit the device's memory (`memory_mb` of the device file; without one memory is no criterion);
- were measured (a median latency) and, when checked, give the host's outputs on the device.
Equal medians (profiles store 4 decimals) are broken by accuracy, then by the smaller file, then
by precision order (float32 first). Nothing is assumed about which precision is faster.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..rundir import RunDir
from . import fmt
from .records import TFLITE, ModelRecord

PRECISION_ORDER = ("float32", "float16", "int16x8", "dynamic_int8", "int8")
PASS, FAIL, NOT_APPLICABLE, REFERENCE, UNKNOWN = "pass", "fail", "not applicable", "reference", "unknown"


# -- gates -----------------------------------------------------------------------------------

def gate_results(gates: Any) -> dict[str, Any]:
    """precision -> gate record from the export stage's details["gates"]: `{"results": {...}}`
    (a "pass" string, a list of failures, or a dict with "status"), or a per-precision dict itself."""
    if not isinstance(gates, dict):
        return {}
    results = gates.get("results")
    if isinstance(results, dict):
        return results
    return {p: r for p, r in gates.items() if p in PRECISION_ORDER}


def gate_status(precision: str, result: Any) -> tuple[str, str]:
    """(status, detail) of one precision's gate record, old and new shapes alike."""
    if result is None:
        return (REFERENCE, "") if precision == "float32" else (UNKNOWN, "")
    if isinstance(result, str):
        return (PASS, "") if result == PASS else (result, "")
    if isinstance(result, list):  # the old shape: the failures (empty: none)
        return (FAIL, "; ".join(map(str, result))) if result else (PASS, "")
    if isinstance(result, dict):
        status = str(result.get("status") or UNKNOWN)
        reason = result.get("reason") or result.get("failures") or ""
        return status, "; ".join(map(str, reason)) if isinstance(reason, list) else str(reason)
    return UNKNOWN, ""


def passes_gates(precision: str, status: str) -> bool:
    """A reduced file ships only where a gate ran and passed; float32 (the reference) unless a gate failed."""
    if precision == "float32":
        return status != FAIL
    return status == PASS


# -- the decision ----------------------------------------------------------------------------

def candidate(precision: str, path: str, profile: dict[str, Any] | None, artifact: dict[str, Any] | None = None,
              gate: Any = None) -> dict[str, Any]:
    """The facts `choose_file` needs about one shipped file on one device (profile: its profile JSON)."""
    profile = profile or {}
    latency = profile.get("latency_ms") if isinstance(profile.get("latency_ms"), dict) else {}
    check = profile.get("outputs_check") if isinstance(profile.get("outputs_check"), dict) else {}
    artifact = artifact or {}
    return {
        "precision": precision, "path": path, "median_ms": (latency or {}).get("median"),
        "peak_mb": profile.get("peak_rss_mb"), "valid": profile.get("valid", True),
        "outputs_match": (check or {}).get("match"), "accuracy": artifact.get("accuracy"),
        "size_bytes": artifact.get("size_bytes", profile.get("model_size_bytes")), "gate": gate,
    }


@dataclass
class _Judged:
    facts: dict[str, Any]
    status: str
    detail: str
    excluded: str | None  # why it cannot ship, None when it can

    @property
    def precision(self) -> str:
        return str(self.facts["precision"])

    @property
    def median(self) -> float | None:
        return self.facts.get("median_ms")


def _exclusion(facts: dict[str, Any], status: str, detail: str, memory_mb: float | None) -> str | None:
    precision = facts["precision"]
    if not passes_gates(precision, status):
        if status == FAIL:
            return "fails the gates" + (f" ({detail})" if detail else "")
        if status == NOT_APPLICABLE:
            return "was not judged by any gate" + (f" ({detail})" if detail else "")
        return "has no gate result" if status == UNKNOWN else f"gate status {status!r}"
    if facts.get("median_ms") is None:
        return "has no latency measured"
    if facts.get("outputs_match") is False:
        return "gives other outputs on the device than on this host"
    peak = facts.get("peak_mb")
    if memory_mb is not None and peak is not None and peak > memory_mb:
        return f"needs {peak:.1f} MB, over the device's {memory_mb:g} MB"
    return None


def _order(judged: _Judged) -> tuple:
    facts = judged.facts
    rank = PRECISION_ORDER.index(judged.precision) if judged.precision in PRECISION_ORDER else len(PRECISION_ORDER)
    accuracy = facts.get("accuracy")
    size = facts.get("size_bytes")
    return (judged.median, -(accuracy if accuracy is not None else -1.0), size if size is not None else float("inf"), rank)


def _times(ratio: float) -> str:
    return f"{ratio:.1f}x" if ratio >= 1.95 else f"{ratio:.2f}x"


def _versus(other: _Judged, chosen: _Judged) -> str:
    assert other.median is not None and chosen.median
    ratio = other.median / chosen.median
    if ratio > 1:
        verdict = f"{_times(ratio)} slower here"
    elif ratio < 1:
        verdict = f"{_times(1 / ratio)} faster here"
    else:
        verdict = "as fast here"
    return f"{other.precision} {fmt.ms(other.median)} ms ({other.precision} {verdict})"


def _tie_break(chosen: _Judged, runner_up: _Judged) -> str:
    a, b = chosen.facts, runner_up.facts
    if a.get("accuracy") is not None and b.get("accuracy") is not None and a["accuracy"] != b["accuracy"]:
        return f"same latency as {runner_up.precision}: the more accurate ({fmt.pct(a['accuracy'])} vs {fmt.pct(b['accuracy'])})"
    if a.get("size_bytes") is not None and b.get("size_bytes") is not None and a["size_bytes"] != b["size_bytes"]:
        return f"same latency as {runner_up.precision}: the smaller file ({fmt.size(a['size_bytes'])} vs {fmt.size(b['size_bytes'])})"
    return f"same latency and accuracy as {runner_up.precision}: the higher precision"


def _gates_clause(eligible: list[_Judged]) -> str:
    if len(eligible) == 1:
        return ""
    return "both pass the gates" if len(eligible) == 2 else "all pass the gates"


def choose_file(device: str, candidates: Iterable[dict[str, Any]], memory_mb: float | None = None) -> dict[str, Any]:
    """The file to ship on `device` and why, in one line: {"device", "ship" (path or None),
    "precision", "reason", "median_ms", "excluded": {precision: why}}."""
    judged = []
    for facts in candidates:
        status, detail = gate_status(facts["precision"], facts.get("gate"))
        judged.append(_Judged(facts, status, detail, _exclusion(facts, status, detail, memory_mb)))
    eligible = sorted((j for j in judged if j.excluded is None), key=_order)
    excluded = {j.precision: j.excluded for j in judged if j.excluded is not None}
    out: dict[str, Any] = {"device": device, "ship": None, "precision": None, "median_ms": None, "excluded": excluded}
    if not eligible:
        why = "; ".join(f"{p} {reason}" for p, reason in excluded.items()) or "no file was profiled"
        return {**out, "reason": f"nothing to ship on {device}: {why}"}
    chosen = eligible[0]
    others = [j for j in sorted(judged, key=lambda j: (j.median is None, j.median or 0.0)) if j is not chosen and j.median is not None]
    line = f"ship {chosen.precision}: {fmt.ms(chosen.median)} ms"
    if others:
        line += " vs " + ", ".join(_versus(o, chosen) for o in others)
    clauses = [c for c in (_gates_clause(eligible),) if c]
    if len(eligible) > 1 and eligible[1].median == chosen.median:
        clauses.append(_tie_break(chosen, eligible[1]))
    if len(judged) == 1:
        clauses.append(f"{chosen.precision} is the only precision profiled")
    clauses += [f"{p} excluded: {reason}" for p, reason in excluded.items()]
    if memory_mb is not None:
        peak = chosen.facts.get("peak_mb")
        clauses.append(f"fits the device's {memory_mb:g} MB (peak {fmt.mb(peak)} MB)" if peak is not None
                       else f"peak memory not measured (device has {memory_mb:g} MB)")
    if chosen.facts.get("valid") is False:
        clauses.append(f"{chosen.precision}'s timing is marked invalid (noisy): profile again to confirm")
    reason = "; ".join([line, *clauses])
    return {**out, "ship": chosen.facts["path"], "precision": chosen.precision, "median_ms": chosen.median, "reason": reason}


# -- what the recipe bought, per device ------------------------------------------------------

@dataclass
class Gain:
    """A shipped file on one device, against the baseline file of the same precision and the baseline float32."""

    shipped: ModelRecord
    same: ModelRecord | None
    float32: ModelRecord | None

    @staticmethod
    def speedup(baseline: ModelRecord | None, shipped: ModelRecord) -> float | None:
        if baseline is None or not baseline.median_ms or not shipped.median_ms:
            return None
        return baseline.median_ms / shipped.median_ms

    @staticmethod
    def size_ratio(baseline: ModelRecord | None, shipped: ModelRecord) -> float | None:
        if baseline is None or not baseline.size_bytes or shipped.size_bytes is None:
            return None
        return shipped.size_bytes / baseline.size_bytes


def gains(records: list[ModelRecord]) -> list[Gain]:
    """Every profiled shipped file paired with the baseline's profiles on the same device (same run)."""
    baselines: dict[tuple[str | None, str | None, str | None], ModelRecord] = {}
    for r in records:
        if r.baseline:
            baselines[(r.run, r.device, r.precision)] = r  # a later profile stage's measurement wins
    if not baselines:
        return []
    out = []
    for r in records:
        if r.baseline or r.median_ms is None:
            continue
        out.append(Gain(r, baselines.get((r.run, r.device, r.precision)), baselines.get((r.run, r.device, "float32"))))
    return out


def ratio_text(value: float | None) -> str:
    return fmt.DASH if value is None else f"{value:.2f}x"


# -- recommendations of a run ----------------------------------------------------------------

def recommendations_of(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """The file to ship per profiled device, as the profile stages recorded it (later stages win per device)."""
    by_device: dict[str, dict[str, Any]] = {}
    for entry in metrics.get("stages", []):
        for rec in entry.get("recommendations") or []:
            if isinstance(rec, dict) and isinstance(rec.get("device"), str):
                by_device[rec["device"]] = rec
    return list(by_device.values())


def derived_recommendations(records: list[ModelRecord], gates: dict[str, Any]) -> list[dict[str, Any]]:
    """For a run written before profile stages recorded their choice: the same rule on its
    profiles and gates (memory unknown: the device file is not part of the run)."""
    by_device: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        if r.baseline or r.device is None or r.precision is None or r.runtime != TFLITE:
            continue
        facts = {"precision": r.precision, "path": r.path or r.file, "median_ms": r.median_ms, "peak_mb": r.peak_mb,
                 "valid": r.valid, "outputs_match": r.outputs_match, "accuracy": r.accuracy, "size_bytes": r.size_bytes,
                 "gate": gates.get(r.precision)}
        by_device.setdefault(r.device, []).append(facts)
    return [choose_file(device, facts) for device, facts in by_device.items()]


def run_recommendations(run: RunDir, metrics: dict[str, Any], records: list[ModelRecord]) -> list[dict[str, Any]]:
    """What the run's profile stages recorded, or (older runs) the same rule applied to its profiles."""
    recorded = recommendations_of(metrics)
    if recorded or not records:
        return recorded
    export = run.last_stage_of(metrics, "export")
    gates = gate_results(run.details(export[1]).get("gates")) if export else {}
    return derived_recommendations(records, gates)


def baseline_notes(metrics: dict[str, Any]) -> list[str]:
    """What went wrong with (or is special about) the baseline comparison, one line each."""
    notes: list[str] = []
    for entry in metrics.get("stages", []):
        baseline = entry.get("baseline")
        if not isinstance(baseline, dict):
            continue
        source = f"the {baseline.get('model_stage', 'baseline')} stage's model"
        if baseline.get("same_as_shipped"):
            notes.append(f"No baseline comparison: the shipped files are converted from {source} (no model stage after it).")
        for precision, why in (baseline.get("failed") or {}).items():
            notes.append(f"Baseline {precision} ({source}) could not be converted, so no {precision} speed-up: {why}")
        for device, failures in (baseline.get("profile_failed") or {}).items():
            for precision, why in (failures or {}).items():
                if precision not in (baseline.get("failed") or {}):
                    notes.append(f"Baseline {precision} could not be profiled on {device}: {why}")
    return list(dict.fromkeys(notes))
