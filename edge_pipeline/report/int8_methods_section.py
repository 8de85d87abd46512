"""Report section: what each int8 preparation method bought and cost (the quantize stage's
equalize / AdaRound / bias correction steps, and `qat` stages)."""

from __future__ import annotations

from typing import Any

from . import fmt
from .doc import Block, Bullets, Paragraph, Section, Table
from .sections import ReportContext, register_section

HEADERS = ["method", "float accuracy", "simulated int8 accuracy", "int8 agreement", "change vs previous", "time"]


def method_rows(steps: list[dict[str, Any]]) -> list[list[str]]:
    rows, previous = [], None
    for step in steps:
        accuracy = step.get("int8_accuracy")
        rows.append([
            step.get("method", "?"), fmt.pct(step.get("float_accuracy")), fmt.pct(accuracy), fmt.pct(step.get("int8_agreement")),
            fmt.points(accuracy - previous) if accuracy is not None and previous is not None else fmt.DASH,
            fmt.seconds(step.get("seconds")),
        ])
        previous = accuracy
    return rows


def method_notes(steps: list[dict[str, Any]]) -> list[str]:
    notes = []
    for step in steps:
        method = step.get("method")
        if method == "equalize":
            pairs = step.get("pairs") or []
            widest = max(pairs, key=lambda p: p.get("spread_before", 0), default=None)
            line = f"equalize: {len(pairs)} layer pair(s) in {step.get('iterations')} pass(es)"
            if widest:
                line += (f"; widest channel spread {widest['spread_before']:.0f}x ({widest['first']}) -> "
                         f"{widest['spread_after']:.1f}x")
            if step.get("absorbed"):
                line += f"; high biases absorbed after {len(step['absorbed'])} BatchNorm layer(s)"
            notes.append(line)
            skipped = step.get("skipped") or []
            if skipped:
                notes.append(f"equalize: {len(skipped)} chain(s) left alone, e.g. {skipped[0]['layer']}: {skipped[0]['reason']}")
        elif method == "relu6_to_relu":
            notes.append(f"relu6_to_relu: {step.get('replaced', 0)} ReLU6 replaced by ReLU (this changes the float model)")
        elif method == "adaround":
            ratio = step.get("mean_error_ratio")
            layers = f"adaround: {len(step.get('layers') or [])} layer(s), {step.get('iterations')} steps each"
            notes.append(f"{layers}; layer output error {ratio:.2f}x lower than nearest rounding on average" if ratio else layers)
        elif method == "bias_correction":
            notes.append(f"bias_correction: {len(step.get('corrected') or [])} layer(s) corrected on {step.get('samples')} "
                         f"calibration inputs; {len(step.get('skipped') or [])} without a bias or BatchNorm to take it")
    return notes


def qat_lines(name: str, details: dict[str, Any]) -> list[str]:
    history = details.get("history") or []
    last = history[-1] if history else {}
    line = (f"{name}: quantization-aware training, {len(history)} epoch(s), {details.get('layers')} layers with int8 weights "
            f"({'per channel' if details.get('per_channel') else 'per tensor'}) and inputs; val accuracy "
            f"{fmt.pct(last.get('val_accuracy'))}")
    low, high = details.get("scale_ratio_min"), details.get("scale_ratio_max")
    if low is not None:
        line += f"; the converter's input scales are {low:.2f}-{high:.2f}x the ones it trained with"
    return [line]


@register_section("int8_methods")
def int8_methods_section(ctx: ReportContext) -> Section | None:
    quantize = [(e, d) for e, d in ctx.details_of("quantize") if d.get("methods")]
    qat = ctx.details_of("qat")
    if not quantize and not qat:
        return None
    blocks: list[Block] = []
    for entry, details in quantize:
        steps = details["methods"]
        blocks.append(Paragraph(f"Stage **{entry['name']}** prepared the model for int8, step by step (ptq: as it came):"))
        blocks.append(Table(HEADERS, method_rows(steps)))
        notes = method_notes(steps)
        if notes:
            blocks.append(Bullets(notes))
    lines = [line for entry, details in qat for line in qat_lines(entry["name"], details)]
    if lines:
        blocks.append(Bullets(lines))
    blocks.append(Paragraph(
        "Simulated int8: weights rounded as the converter will (BatchNorm folded), inputs of every convolution and "
        "Linear rounded over their calibrated range, in torch; it ranks the methods. The exported int8 file's own "
        "accuracy and agreement are in the quantization section."))
    return Section("int8_methods", "Int8 preparation", blocks)
