"""Report section: what each restructure transform replaced, what it saved, what it cost in fidelity."""

from __future__ import annotations

from typing import Any

from . import fmt
from .doc import Block, Bullets, Paragraph, Section, Table
from .sections import ReportContext, register_section

HEADERS = ["transform", "layers replaced", "params", "MACs", "layer error mean / max", "logits error", "top-1 agreement"]


def _error(value: float | None) -> str:
    """Relative errors and agreements are approximate: one decimal."""
    return fmt.pct(value, digits=1)


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
            fmt.change(facts.get("params_before"), facts.get("params_after")),
            fmt.change(facts.get("macs_before"), facts.get("macs_after")),
            f"{_error(rec.get('mean'))} / {_error(rec.get('max'))}" if rec else fmt.DASH,
            _error(rec.get("logits_rel_error")), _error(rec.get("top1_agreement")),
        ])
    return rows


def transform_notes(details: dict[str, Any]) -> list[str]:
    notes = []
    for name, facts in details.get("transforms", {}).items():
        rec = facts.get("reconstruction") or {}
        if rec.get("bn_refreshed"):
            notes.append(f"{name}: BatchNorm statistics of {rec['bn_refreshed']} layer(s) re-estimated; top-1 agreement "
                         f"before that {_error((rec.get('before_bn_refresh') or {}).get('top1_agreement'))}")
        skipped = (facts.get("edit") or {}).get("skipped") or []
        if skipped:
            notes.append(f"{name}: {len(skipped)} layer(s) left alone, e.g. {skipped[0]['path']}: {skipped[0]['reason']}")
        if not facts.get("replaced"):
            notes.append(f"{name}: nothing to replace in this model")
    return notes


@register_section("restructure")
def restructure_section(ctx: ReportContext) -> Section | None:
    stages = ctx.details_of("restructure")
    if not stages:
        return None
    blocks: list[Block] = []
    for entry, details in stages:
        if len(stages) > 1:
            blocks.append(Paragraph(f"Stage **{entry['name']}**:"))
        blocks.append(Table(HEADERS, transform_rows(details)))
        notes = transform_notes(details)
        if notes:
            blocks.append(Bullets(notes))
    samples = stages[-1][1].get("calibration_samples")
    blocks.append(Paragraph(
        f"Errors are relative (||new - old|| / ||old||) on {samples} calibration inputs: each replaced layer fed the input "
        "the original layer saw, and the logits of the whole model against the model before the transform."
    ))
    return Section("restructure", "Restructure", blocks)
