"""The stage table (one row per model the run produced: every model stage, then every exported file
on every device it was profiled on) and the stage timings: the report's first two sections."""

from __future__ import annotations

from typing import Any

from . import fmt
from .doc import BAD, Block, Cell, Paragraph, Section, Table
from .plots import stages_plot
from .records import ModelRecord
from .sections import ReportContext, register_section

HEADERS = ["stage", "model", "status", "accuracy", "params", "MACs", "size", "device", "median ms", "p90 ms", "peak MB", "notes"]


def _notes(r: ModelRecord) -> str:
    notes = [f"{r.transposes} TRANSPOSE"] if r.transposes else []
    if r.valid is False:
        notes.append("invalid: " + "; ".join(r.notes))
    else:
        notes += r.notes
    return "; ".join(notes)


def cells(r: ModelRecord) -> list[Cell]:
    untrusted = BAD if r.valid is False else None
    return [
        Cell(r.stage or fmt.DASH), Cell(r.kind), Cell(r.status or fmt.DASH), Cell(fmt.pct(r.accuracy)),
        Cell(fmt.count(r.params)), Cell(fmt.count(r.macs)), Cell(fmt.size(r.size_bytes)), Cell(r.device or fmt.DASH),
        Cell(fmt.ms(r.median_ms), untrusted), Cell(fmt.ms(r.p90_ms), untrusted), Cell(fmt.mb(r.peak_mb)),
        Cell(_notes(r), untrusted if r.notes else None),
    ]


def stage_table(records: list[ModelRecord]) -> Table:
    return Table(HEADERS, [cells(r) for r in records])


@register_section("models")
def models_section(ctx: ReportContext) -> Section | None:
    records = ctx.stage_records
    if not records:
        return None
    blocks: list[Block] = [
        Paragraph("Every model the run produced: accuracy is top-1 on the held-out test split; latency is per "
                  "inference, batch 1 (median and 90th percentile of the profile runs)."),
        stage_table(records),
    ]
    if ctx.plots:
        blocks += ctx.figure(stages_plot(records, ctx.plot_path("stages.png")), "accuracy and size per stage")
    return Section("models", "Models", blocks)


def batchnorm_line(stage: str, check: dict[str, Any]) -> str | None:
    """One line on a train/finetune stage's BatchNorm statistics, when they were re-estimated."""
    if not check.get("refreshed"):
        return None
    before, after = fmt.pct(check.get("val_accuracy_before")), fmt.pct(check.get("val_accuracy_after"))
    why = (f"eval mode {fmt.pct(check.get('eval_accuracy'))} vs {fmt.pct(check.get('batch_statistics_accuracy'))} "
           f"with batch statistics on {check.get('check_samples')} validation images")
    if check.get("kept"):
        return f"**{stage}**: BatchNorm statistics re-estimated ({why}): validation accuracy {before} -> {after}."
    return (f"**{stage}**: BatchNorm statistics re-estimated ({why}) but not kept: validation accuracy {before} -> {after}; "
            "the trained statistics stay.")


def batchnorm_blocks(ctx: ReportContext) -> list[Block]:
    lines = [batchnorm_line(entry["name"], details["batchnorm"])
             for kind in ("train", "finetune") for entry, details in ctx.details_of(kind)
             if isinstance(details.get("batchnorm"), dict)]
    return [Paragraph(line) for line in lines if line]


@register_section("stages")
def stages_section(ctx: ReportContext) -> Section | None:
    rows = [
        [str(e.get("name", fmt.DASH)), str(e.get("type", fmt.DASH)), str(e.get("status", fmt.DASH)), fmt.seconds(e.get("seconds"))]
        for e in ctx.metrics["stages"]
    ]
    if not rows:
        return None
    return Section("stages", "Stages", [Table(["stage", "type", "status", "time"], rows), *batchnorm_blocks(ctx)])
