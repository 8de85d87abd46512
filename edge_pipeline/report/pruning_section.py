"""Run report section: what each prune stage removed (per layer) and what fine-tuning and
distillation recovered, from the prune/finetune stages' details.json."""

from __future__ import annotations

import re
from typing import Any

from . import fmt
from .doc import Block, Bullets, Section, Table
from .sections import ReportContext, register_section

MAX_LAYER_ROWS = 12


def _accuracy_before(metrics: dict[str, Any], name: str) -> float | None:
    """Accuracy of the model stage just before `name`."""
    previous = None
    for entry in metrics["stages"]:
        if entry["name"] == name:
            return previous
        if "model" in entry:
            previous = entry["model"].get("accuracy")
    return None


def _natural(name: str) -> list[tuple[int, int, str]]:
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", name)]


def _prune_head(entry: dict[str, Any], details: dict[str, Any]) -> str:
    head = f"**{entry['name']}** ({details.get('method', '?')}"
    if "target" in details:
        t = details["target"]
        head += f", {t['kind']} {'removed' if t['kind'] == 'ratio' else 'kept'} {t['value']:g}"
    allocation = details.get("prune", {}).get("allocation")
    if allocation:
        head += f", {allocation}"
    rounds = len(details.get("rounds", []))
    return head + f", {rounds} round{'s' if rounds != 1 else ''})"


def _prune_summary(entry: dict[str, Any], details: dict[str, Any], metrics: dict[str, Any]) -> str:
    head = _prune_head(entry, details)
    macs, params = details.get("macs", [0, 0]), details.get("params", [0, 0])
    if not (macs[0] and params[0]):
        return head
    return (f"{head}: MACs {fmt.count(macs[0])} -> {fmt.count(macs[1])} ({macs[1] / macs[0]:.1%} kept), params "
            f"{fmt.count(params[0])} -> {fmt.count(params[1])} ({params[1] / params[0]:.1%} kept); accuracy "
            f"{fmt.pct(_accuracy_before(metrics, entry['name']))} -> {fmt.pct(entry.get('model', {}).get('accuracy'))}")


def layer_table(entry: dict[str, Any], details: dict[str, Any]) -> Table | None:
    """Most-pruned layers first; ties in model order (features.3 before features.10)."""
    layers = sorted(details.get("channels", {}).items(),
                    key=lambda item: (item[1][1] / max(item[1][0], 1), _natural(item[0])))
    if not layers:
        return None
    rows = [[path, f"{before} -> {kept}", fmt.kept(before, kept)] for path, (before, kept) in layers[:MAX_LAYER_ROWS]]
    if len(layers) > MAX_LAYER_ROWS:
        rows.append([f"... {len(layers) - MAX_LAYER_ROWS} more layers", "", ""])
    return Table([f"layer ({entry['name']})", "out channels", "kept"], rows)


def prune_blocks(entry: dict[str, Any], details: dict[str, Any], metrics: dict[str, Any]) -> list[Block]:
    summary = details.get("prune", {})
    items = [_prune_summary(entry, details, metrics)]
    if details.get("method") == "magnitude":
        items.append(f"{summary.get('sparsity', 0):.1%} of {summary.get('weights', 0)} conv/linear weights are zero; "
                     "dense kernels run them at full cost (see the benchmark for TFLite's sparse format)")
        return [Bullets(items)]
    items += [f"kept whole: {reason}" for reason in summary.get("unprunable_because", [])[:5]]
    blocks: list[Block] = [Bullets(items)]
    table = layer_table(entry, details)
    return blocks + ([table] if table else [])


def finetune_items(entry: dict[str, Any], details: dict[str, Any], metrics: dict[str, Any]) -> list[str]:
    before, after = _accuracy_before(metrics, entry["name"]), entry.get("model", {}).get("accuracy")
    text = f"**{entry['name']}** ({len(details.get('history', []))} epochs"
    if details.get("teacher"):
        text += f", distilled from {details['teacher']} ({details.get('objective', 'logits')})"
    text += f"): accuracy {fmt.pct(before)} -> {fmt.pct(after)}"
    terms = details.get("final_terms")
    if terms:
        text += "; last-epoch terms " + ", ".join(f"{k} {v:.4g}" for k, v in terms.items())
    items = [text]
    if details.get("feature_pairs"):
        pairs = ", ".join(s if s == t else f"{s}->{t}" for s, t in details["feature_pairs"])
        items.append(f"feature pairs: {pairs} (adapters: {', '.join(details.get('adapters', []))})")
    return items


@register_section("pruning")
def pruning_section(ctx: ReportContext) -> Section | None:
    prunes, tunes = ctx.details_of("prune"), ctx.details_of("finetune")
    if not prunes and not tunes:
        return None
    blocks: list[Block] = []
    for entry, details in prunes:
        blocks += prune_blocks(entry, details, ctx.metrics)
    tuned = [item for entry, details in tunes for item in finetune_items(entry, details, ctx.metrics)]
    if tuned:
        blocks.append(Bullets(tuned))
    return Section("pruning", "Pruning and fine-tuning", blocks)
