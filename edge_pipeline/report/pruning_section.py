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
        if t["kind"] == "latency_ms":
            head += f", latency at most {t['value']:g} ms"
        elif t["kind"] == "latency":
            head += f", latency at most {t['value']:g} of the incoming model's"
        else:
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


def prune_blocks(entry: dict[str, Any], details: dict[str, Any], metrics: dict[str, Any],
                 measured: dict[tuple[str, str], float] | None = None) -> list[Block]:
    measured = measured or {}
    summary = details.get("prune", {})
    items = [_prune_summary(entry, details, metrics)]
    if details.get("method") == "magnitude":
        items.append(f"{summary.get('sparsity', 0):.1%} of {summary.get('weights', 0)} conv/linear weights are zero; "
                     "dense kernels run them at full cost (see the benchmark for TFLite's sparse format)")
        return [Bullets(items)]
    items += [f"kept whole: {reason}" for reason in summary.get("unprunable_because", [])[:5]]
    latency = details.get("latency") or {}
    if latency.get("round_to") and latency.get("tile"):
        items.append(f"round_to auto: {latency['round_to']} (the {latency['precision']} kernel tile measured on "
                     f"{latency['device']})")
    blocks: list[Block] = [Bullets(items)]
    if latency.get("predicted_ms") is not None:
        blocks.append(latency_table(latency, measured))
    table = layer_table(entry, details)
    return blocks + ([table] if table else [])


def latency_table(latency: dict[str, Any], measured: dict[tuple[str, str], float]) -> Table:
    """Target, predicted and measured latency of the pruned model on the target's device."""
    device, precision = latency["device"], latency["precision"]
    shipped = measured.get((device, precision))
    row = [f"{device} ({precision})", fmt.ms(latency["incoming_ms"], 4), fmt.ms(latency["target_ms"], 4),
           f"{fmt.ms(latency['predicted_ms'], 4)} ({latency['predicted_ratio']:.1%})" if latency.get("predicted_ratio")
           else fmt.ms(latency["predicted_ms"], 4),
           fmt.ms(shipped, 4) if shipped is not None else "not profiled"]
    return Table(["device", "incoming (predicted)", "target", "pruned (predicted)", "shipped file (measured median)"], [row])


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
    measured = measured_medians(ctx)
    for entry, details in prunes:
        blocks += prune_blocks(entry, details, ctx.metrics, measured)
    tuned = [item for entry, details in tunes for item in finetune_items(entry, details, ctx.metrics)]
    if tuned:
        blocks.append(Bullets(tuned))
    return Section("pruning", "Pruning and fine-tuning", blocks)


def measured_medians(ctx: ReportContext) -> dict[tuple[str, str], float]:
    """(device, precision) -> measured median ms of the run's own (not the baseline's) profiled files."""
    out: dict[tuple[str, str], float] = {}
    for record in ctx.profile_records:
        if record.baseline or record.median_ms is None or record.device is None or record.precision is None:
            continue
        out.setdefault((record.device, record.precision), record.median_ms)
    return out
