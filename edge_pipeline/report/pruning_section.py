"""Run report section: what each prune stage removed (per layer) and what fine-tuning and
distillation recovered, from the prune/finetune stages' details.json."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from .sections import Section, details_of, register_section
from .table import fmt_count

MAX_LAYER_ROWS = 12


def _accuracy_before(metrics: dict[str, Any], name: str) -> float | None:
    """Accuracy of the model stage just before `name`."""
    previous = None
    for entry in metrics["stages"]:
        if entry["name"] == name:
            return previous
        if "model" in entry:
            previous = entry["model"]["accuracy"]
    return None


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x * 100:.2f}%"


def _natural(name: str) -> list:
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", name)]


def _prune_lines(entry: dict[str, Any], details: dict[str, Any], metrics: dict[str, Any]) -> list[str]:
    method = details.get("method", "?")
    macs, params = details.get("macs", [0, 0]), details.get("params", [0, 0])
    rounds = details.get("rounds", [])
    after = entry.get("model", {}).get("accuracy")
    head = f"**{entry['name']}** ({method}"
    if "target" in details:
        t = details["target"]
        head += f", {t['kind']} {'removed' if t['kind'] == 'ratio' else 'kept'} {t['value']:g}"
    summary = details.get("prune", {})
    if summary.get("allocation"):
        head += f", {summary['allocation']}"
    head += f", {len(rounds)} round{'s' if len(rounds) != 1 else ''})"
    lines = [
        f"- {head}: MACs {fmt_count(macs[0])} -> {fmt_count(macs[1])} ({macs[1] / macs[0]:.1%} kept), params "
        f"{fmt_count(params[0])} -> {fmt_count(params[1])} ({params[1] / params[0]:.1%} kept); accuracy "
        f"{_pct(_accuracy_before(metrics, entry['name']))} -> {_pct(after)}" if macs[0] and params[0] else f"- {head}",
    ]
    if method == "magnitude":
        lines.append(f"- {summary.get('sparsity', 0):.1%} of {summary.get('weights', 0)} conv/linear weights are zero; "
                     "dense kernels run them at full cost (see the benchmark for TFLite's sparse format)")
        return lines
    for reason in summary.get("unprunable_because", [])[:5]:
        lines.append(f"- kept whole: {reason}")
    # Most-pruned first; ties in model order (features.3 before features.10).
    layers = sorted(details.get("channels", {}).items(),
                    key=lambda item: (item[1][1] / max(item[1][0], 1), _natural(item[0])))
    if layers:
        lines += ["", f"| layer ({entry['name']}) | out channels | kept |", "|---|---|---|"]
        for path, (before, kept) in layers[:MAX_LAYER_ROWS]:
            lines.append(f"| {path} | {before} -> {kept} | {kept / before:.0%} |")
        if len(layers) > MAX_LAYER_ROWS:
            lines.append(f"| ... {len(layers) - MAX_LAYER_ROWS} more layers | | |")
        lines.append("")
    return lines


def _finetune_lines(entry: dict[str, Any], details: dict[str, Any], metrics: dict[str, Any]) -> list[str]:
    before, after = _accuracy_before(metrics, entry["name"]), entry.get("model", {}).get("accuracy")
    epochs = len(details.get("history", []))
    text = f"- **{entry['name']}** ({epochs} epochs"
    if details.get("teacher"):
        text += f", distilled from {details['teacher']} ({details.get('objective', 'logits')})"
    text += f"): accuracy {_pct(before)} -> {_pct(after)}"
    terms = details.get("final_terms")
    if terms:
        text += "; last-epoch terms " + ", ".join(f"{k} {v:.4g}" for k, v in terms.items())
    lines = [text]
    if details.get("feature_pairs"):
        pairs = ", ".join(s if s == t else f"{s}->{t}" for s, t in details["feature_pairs"])
        lines.append(f"- feature pairs: {pairs} (adapters: {', '.join(details.get('adapters', []))})")
    return lines


@register_section("pruning")
def pruning_section(run_dir: Path, metrics: dict[str, Any]) -> Section | None:
    prunes = details_of(run_dir, metrics, "prune")
    tunes = details_of(run_dir, metrics, "finetune")
    if not prunes and not tunes:
        return None
    lines: list[str] = []
    for entry, details in prunes:
        lines += _prune_lines(entry, details, metrics)
    for entry, details in tunes:
        lines += _finetune_lines(entry, details, metrics)
    return Section(title="Pruning and fine-tuning", markdown="\n".join(lines))
