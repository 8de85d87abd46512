"""Report section: how faithful each exported precision is, the worst layers, float-kept layers'
cost, and which device runtimes load which file (from the export stage's details.json)."""

from __future__ import annotations

from typing import Any

from . import fmt
from .doc import BAD, Block, Cell, Paragraph, Section, Table
from .sections import ReportContext, register_section

TOP_LAYERS = 5
FIDELITY_HEADERS = ["precision", "accuracy", "drop (points)", "agreement", "cosine (min)", "max rel. error",
                    "transposes", "size", "gate"]
DIAGNOSIS_HEADERS = ["rank", "layer", "op", "added error", "error", "rel. RMSE", "cosine", "dtype", "match"]
KEEP_FLOAT_HEADERS = ["int8 model", "accuracy", "agreement", "size", "host latency (ms, in-process)"]
COMPATIBILITY_HEADERS = ["device", "precision", "runtime", "status", "how", "problem / fix"]


def _failed(failures: list[Any]) -> Cell:
    return Cell("FAIL: " + "; ".join(map(str, failures)), BAD)


def _gate_cell(gates: dict[str, Any], precision: str, configured: dict[str, Any]) -> Cell:
    """What the export's gates found for one file: "pass" only where a gate ran. Records are
    {"status", "checks", "failures", "reason"}; older runs stored "pass" (even when no gate was set)
    or the list of failures."""
    gate = gates.get(precision)
    if gate is None:
        return Cell(fmt.DASH if precision == "float32" else "n/a")
    if isinstance(gate, list):
        return _failed(gate) if gate else Cell("pass")
    if isinstance(gate, str):
        no_gate_set = all(configured.get(g) is None for g in ("max_accuracy_drop", "min_agreement"))
        return Cell("no gate set" if gate == "pass" and no_gate_set else gate)
    status = str(gate.get("status", "n/a"))
    if status == "fail":
        return _failed(gate.get("failures") or [])
    if status == "not applicable" and "untrained" in str(gate.get("reason")):
        return Cell("not applicable: untrained float model")
    if status == "off":
        return Cell("off (null in the recipe)")
    return Cell(status)


def _limit_text(check: dict[str, Any]) -> str:
    default = " (default)" if check.get("default") else ""
    if check.get("gate") == "max_accuracy_drop":
        return f"accuracy drop <= {fmt.number(check.get('limit', 0) * 100, '.2f')} points{default}"
    return f"agreement >= {fmt.pct(check.get('limit'))}{default}"


def gate_limits_paragraph(details: dict[str, Any]) -> Paragraph | None:
    """The limits each file was held to, marking the defaults (a recipe that sets none gets them)."""
    results = (details.get("gates") or {}).get("results") or {}
    parts = [f"{precision}: {', '.join(_limit_text(c) for c in r['checks'])}"
             for precision, r in results.items() if isinstance(r, dict) and r.get("checks")]
    return Paragraph("Gate limits: " + "; ".join(parts) + ".") if parts else None


def untrained_paragraph(details: dict[str, Any]) -> Paragraph | None:
    if not details.get("untrained"):
        return None
    return Paragraph(f"**Untrained float model**: its test accuracy {fmt.pct(details.get('float_accuracy'))} is at chance "
                     f"({fmt.pct(details.get('chance_accuracy'))}), so these files are not a result, and the gates, which "
                     "compare each file with the float model, do not apply. Train the model (or give `model.weights`).")


def fidelity_table(details: dict[str, Any]) -> Table:
    float_accuracy = details.get("float_accuracy")
    configured = details.get("gates") or {}
    gates = configured.get("results") or {}
    rows = []
    for precision, facts in details.get("precisions", {}).items():
        drop = None if float_accuracy is None else float_accuracy - facts["accuracy"]
        rows.append([
            precision, fmt.pct(facts["accuracy"]), fmt.points(drop), fmt.pct(facts.get("agreement")),
            f"{fmt.number(facts.get('cosine_mean'), '.5f')} ({fmt.number(facts.get('cosine_min'), '.5f')})",
            fmt.number(facts.get("max_rel_error"), ".2e"), str(facts.get("transposes", fmt.DASH)),
            fmt.size(facts.get("size_bytes")), _gate_cell(gates, precision, configured),
        ])
    return Table(FIDELITY_HEADERS, rows)


def diagnosis_table(ranked: list[dict[str, Any]]) -> Table:
    return Table(DIAGNOSIS_HEADERS, [
        [str(rank), r["layer"], r["op"], fmt.number(r["added"], ".4f"), fmt.number(r["error"], ".4f"),
         fmt.number(r["rel_rmse"], ".4f"), fmt.number(r["cosine"], ".4f"), r["quant_dtype"], r["method"]]
        for rank, r in enumerate(ranked, start=1)
    ])


def diagnosis_blocks(diagnosis: dict[str, Any]) -> list[Block]:
    blocks: list[Block] = []
    for precision, diag in diagnosis.items():
        if "error" in diag:
            blocks.append(Paragraph(f"**{precision}**: diagnosis unavailable ({diag['error']})"))
            continue
        methods = ", ".join(f"{k}: {v}" for k, v in diag["methods"].items())
        verified = "verified" if diag["verified"] else "NOT verified: " + "; ".join(diag["notes"])
        blocks += [
            Paragraph(f"**{precision}** vs float32 on {diag['samples']} test inputs: {diag['matched']} of {diag['float_ops']} "
                      f"float ops matched ({methods}), {verified}. Ranked by the error each layer adds "
                      "(mean per-channel relative RMSE)."),
            diagnosis_table(diag["ranked"][:TOP_LAYERS]),
        ]
    return blocks


def _keep_float_row(label: str, facts: dict[str, Any]) -> list[str]:
    return [label, fmt.pct(facts["accuracy"]), fmt.pct(facts.get("agreement")), fmt.size(facts.get("size_bytes")),
            fmt.ms(facts.get("host_latency_ms"), digits=4)]


def keep_float_blocks(cost: dict[str, Any]) -> list[Block]:
    full, mixed = cost["full_int8"], cost["mixed"]
    layers = ", ".join(cost["layers"])
    if "error" in full:
        return [Paragraph(f"Kept in float in the int8 model: {layers}. The full integer model does not load "
                          f"({full['error']}); with float layers: accuracy {fmt.pct(mixed['accuracy'])}, "
                          f"host latency {fmt.ms(mixed['host_latency_ms'], digits=4)} ms.")]
    return [
        Paragraph(f"Kept in float in the int8 model: {layers} ({cost['denylisted_tensors']} tensors stay float)."),
        Table(KEEP_FLOAT_HEADERS, [_keep_float_row(f"full integer ({cost['full_int8_file']})", full),
                                   _keep_float_row("with float layers", mixed)]),
        Paragraph(f"Accuracy gain {fmt.points(cost['accuracy_gain'])} points for x{cost['latency_ratio']:.2f} host latency."),
    ]


def _compatibility_row(r: dict[str, Any]) -> list[str | Cell]:
    problems = "; ".join(f"{p['op']}{' v' + str(p['version']) if p.get('version') else ''}: {p['reason']}" for p in r["problems"])
    note = f"{problems}. Fix: {r['fix']}" if problems else r.get("detail", "")
    status = Cell(r["status"], BAD if r["status"] == "incompatible" else None)
    return [r["device"], r["precision"], f"{r['runtime']} {r.get('version') or ''}".strip(), status, r["method"], note]


def compatibility_table(rows: list[dict[str, Any]]) -> Table:
    return Table(COMPATIBILITY_HEADERS, [_compatibility_row(r) for r in rows])


def export_blocks(entry: dict[str, Any], details: dict[str, Any]) -> list[Block]:
    blocks: list[Block] = [
        Paragraph(f"Stage **{entry['name']}**: float (torch) accuracy {fmt.pct(details.get('float_accuracy'))}; "
                  f"ONNX vs torch relative error {fmt.number(details.get('onnx_vs_torch_rel_error'), '.2e')}."),
        fidelity_table(details),
    ]
    blocks += [b for b in (untrained_paragraph(details), gate_limits_paragraph(details)) if b is not None]
    for precision, ops in (details.get("float_fallback") or {}).items():
        blocks.append(Paragraph(f"{precision}: {', '.join(ops)} has no {precision} kernel in TFLite and stays float in that file."))
    blocks += diagnosis_blocks(details.get("diagnosis", {}))
    if details.get("keep_float"):
        blocks += keep_float_blocks(details["keep_float"])
    if details.get("compatibility"):
        blocks += [Paragraph("Which device runtime loads which file:"), compatibility_table(details["compatibility"])]
    return blocks


@register_section("quantization")
def quantization_section(ctx: ReportContext) -> Section | None:
    blocks = [b for entry, details in ctx.details_of("export") if details.get("precisions")
              for b in export_blocks(entry, details)]
    return Section("quantization", "Quantization and conversion", blocks) if blocks else None
