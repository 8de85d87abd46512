"""Report section: how faithful each exported precision is, the worst layers, float-kept layers'
cost, and which device runtimes load which file (from the export stage's details.json)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .sections import Section, details_of, register_section

TOP_LAYERS = 5


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.2f}"


def fidelity_table(details: dict[str, Any]) -> list[str]:
    float_accuracy = details.get("float_accuracy")
    gates = (details.get("gates") or {}).get("results", {})
    lines = [
        "| precision | accuracy | drop (points) | agreement | cosine (min) | max rel. error | transposes | size | gate |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for precision, facts in details.get("precisions", {}).items():
        drop = "-" if float_accuracy is None else f"{(float_accuracy - facts['accuracy']) * 100:+.2f}"
        gate = gates.get(precision, "-" if precision == "float32" else "n/a")
        gate = gate if isinstance(gate, str) else "FAIL"
        lines.append(
            f"| {precision} | {_pct(facts['accuracy'])} | {drop} | {_pct(facts['agreement'])} | "
            f"{facts['cosine_mean']:.5f} ({facts['cosine_min']:.5f}) | {facts['max_rel_error']:.2e} | "
            f"{facts['transposes']} | {facts['size_bytes'] / 1024:.1f} KB | {gate} |"
        )
    return lines


def diagnosis_lines(diagnosis: dict[str, Any]) -> list[str]:
    from ..convert.diagnose import format_table

    lines = []
    for precision, diag in diagnosis.items():
        if "error" in diag:
            lines += ["", f"**{precision}**: diagnosis unavailable ({diag['error']})"]
            continue
        lines += [
            "", f"**{precision}** vs float32 on {diag['samples']} test inputs: {diag['matched']} of {diag['float_ops']} "
            f"float ops matched ({', '.join(f'{k}: {v}' for k, v in diag['methods'].items())}), "
            f"{'verified' if diag['verified'] else 'NOT verified: ' + '; '.join(diag['notes'])}. "
            "Ranked by the error each layer adds (mean per-channel relative RMSE).", "",
            format_table(diag["ranked"][:TOP_LAYERS]),
        ]
    return lines


def keep_float_lines(cost: dict[str, Any]) -> list[str]:
    full, mixed = cost["full_int8"], cost["mixed"]
    if "error" in full:
        return ["", f"Kept in float in the int8 model: {', '.join(cost['layers'])}. The full integer model does not "
                    f"load ({full['error']}); with float layers: accuracy {_pct(mixed['accuracy'])} %, "
                    f"host latency {mixed['host_latency_ms']:.4f} ms."]
    return [
        "", f"Kept in float in the int8 model: {', '.join(cost['layers'])} ({cost['denylisted_tensors']} tensors stay float).", "",
        "| int8 model | accuracy | agreement | size | host latency (ms, in-process) |",
        "|---|---|---|---|---|",
        f"| full integer ({cost['full_int8_file']}) | {_pct(full['accuracy'])} | {_pct(full['agreement'])} | "
        f"{full['size_bytes'] / 1024:.1f} KB | {full['host_latency_ms']:.4f} |",
        f"| with float layers | {_pct(mixed['accuracy'])} | {_pct(mixed['agreement'])} | "
        f"{mixed['size_bytes'] / 1024:.1f} KB | {mixed['host_latency_ms']:.4f} |",
        "", f"Accuracy gain {cost['accuracy_gain'] * 100:+.2f} points for x{cost['latency_ratio']:.2f} host latency.",
    ]


def compatibility_lines(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["", "| device | precision | runtime | status | how | problem / fix |", "|---|---|---|---|---|---|"]
    for r in rows:
        problems = "; ".join(f"{p['op']}{' v' + str(p['version']) if p['version'] else ''}: {p['reason']}" for p in r["problems"])
        note = f"{problems}. Fix: {r['fix']}" if problems else r.get("detail", "")
        lines.append(f"| {r['device']} | {r['precision']} | {r['runtime']} {r['version'] or ''} | {r['status']} | {r['method']} | {note} |")
    return lines


@register_section("quantization")
def quantization_section(run_dir: Path, metrics: dict[str, Any]) -> Section | None:
    blocks = []
    for entry, details in details_of(run_dir, metrics, "export"):
        if not details.get("precisions"):
            continue
        lines = [f"Stage **{entry['name']}**: float (torch) accuracy {_pct(details.get('float_accuracy'))} %; "
                 f"ONNX vs torch relative error {details.get('onnx_vs_torch_rel_error')}.", ""]
        lines += fidelity_table(details)
        for precision, ops in (details.get("float_fallback") or {}).items():
            lines += ["", f"{precision}: {', '.join(ops)} has no {precision} kernel in TFLite and stays float in that file."]
        lines += diagnosis_lines(details.get("diagnosis", {}))
        if details.get("keep_float"):
            lines += keep_float_lines(details["keep_float"])
        if details.get("compatibility"):
            lines += compatibility_lines(details["compatibility"])
        blocks.append("\n".join(lines))
    if not blocks:
        return None
    return Section("Quantization and conversion", "\n\n".join(blocks))
