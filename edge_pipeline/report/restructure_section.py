"""Report section: what each restructure transform replaced, what it saved, what it cost in fidelity."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .sections import Section, details_of, register_section
from .table import fmt_count


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _ratio(before: int, after: int) -> str:
    return f"{fmt_count(before)} -> {fmt_count(after)} ({after / before:.2f}x)" if before else "-"


def transform_rows(details: dict[str, Any]) -> list[list[str]]:
    rows = []
    transforms = details.get("transforms", {})
    for name in details.get("order") or list(transforms):
        facts = transforms.get(name)
        if facts is None:
            continue
        rec = facts.get("reconstruction") or {}
        rows.append([
            name, str(facts.get("replaced", 0)),
            _ratio(facts["params_before"], facts["params_after"]), _ratio(facts["macs_before"], facts["macs_after"]),
            f"{_pct(rec.get('mean'))} / {_pct(rec.get('max'))}" if rec else "-",
            _pct(rec.get("logits_rel_error")) if rec else "-",
            _pct(rec.get("top1_agreement")) if rec else "-",
        ])
    return rows


HEADERS = ["transform", "layers replaced", "params", "MACs", "layer error mean / max", "logits error", "top-1 agreement"]


@register_section("restructure")
def restructure_section(run_dir: Path, metrics: dict[str, Any]) -> Section | None:
    stages = details_of(run_dir, metrics, "restructure")
    if not stages:
        return None
    lines: list[str] = []
    for entry, details in stages:
        if len(stages) > 1:
            lines += [f"Stage {entry['name']}:", ""]
        lines.append("| " + " | ".join(HEADERS) + " |")
        lines.append("|" + "|".join("---" for _ in HEADERS) + "|")
        lines += ["| " + " | ".join(row) + " |" for row in transform_rows(details)]
        lines.append("")
        notes = []
        for name, facts in details.get("transforms", {}).items():
            rec = facts.get("reconstruction") or {}
            if rec.get("bn_refreshed"):
                notes.append(f"{name}: BatchNorm statistics of {rec['bn_refreshed']} layer(s) re-estimated; top-1 agreement "
                             f"before that {_pct(rec['before_bn_refresh']['top1_agreement'])}")
            skipped = (facts.get("edit") or {}).get("skipped") or []
            if skipped:
                notes.append(f"{name}: {len(skipped)} layer(s) left alone, e.g. {skipped[0]['path']}: {skipped[0]['reason']}")
            if not facts.get("replaced"):
                notes.append(f"{name}: nothing to replace in this model")
        lines += [f"- {n}" for n in notes]
        if notes:
            lines.append("")
    samples = stages[-1][1].get("calibration_samples")
    lines.append(
        f"Errors are relative (||new - old|| / ||old||) on {samples} calibration inputs: each replaced layer fed the input "
        "the original layer saw, and the logits of the whole model against the model before the transform."
    )
    return Section("Restructure", "\n".join(lines))
