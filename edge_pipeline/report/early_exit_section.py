"""Run report section: early exits. What the branches learned (accuracy per exit), the threshold
chosen on validation and what it buys on test (expected MACs), the TFLite chain per precision, and on
each device the measured curve of accuracy against mean latency, the exit histogram, the chosen
threshold's speed-up over the plain model and the worst case (no exit fires)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg", force=True)
import matplotlib.pyplot as plt

from ..artifacts import read_json
from . import fmt
from .doc import Block, Bullets, Section, Table
from .plots import BLUE, DPI, GREEN, GREY, YELLOW, accuracy_limits
from .sections import ReportContext, register_section

CURVE_PLOT = "early_exit_curve.png"
HISTOGRAM_PLOT = "early_exit_exits.png"


def stage_items(details: dict[str, Any]) -> list[str]:
    """What the early_exit stage made and chose (torch, test split)."""
    exits = details.get("exits") or []
    test, val = details.get("test") or {}, details.get("val") or {}
    cuts = ", ".join(c.get("label", "?") for c in details.get("cuts") or [])
    mode = "self-distilled from the final classifier (FastBERT)" if details.get("mode") == "self_distillation" else \
        "trained jointly with the backbone on labels (BranchyNet)"
    items = [f"{len(exits) - 1} exit branch(es) after {cuts or '?'}, {mode}"]
    if exits:
        accuracies = ", ".join(f"exit {e['index'] + 1} {fmt.pct(e.get('test_accuracy'))}" for e in exits[:-1])
        items.append(f"test accuracy per exit: {accuracies}; final classifier {fmt.pct(exits[-1].get('test_accuracy'))}")
    if test:
        items.append(
            f"threshold {details.get('measure')} < {details.get('threshold')} (the fastest within "
            f"{fmt.points(details.get('max_accuracy_drop'))} of the final classifier on validation: "
            f"{fmt.pct(val.get('accuracy'))} vs {fmt.pct(val.get('reference_accuracy'))}); on test {fmt.pct(test.get('accuracy'))} "
            f"vs {fmt.pct(test.get('reference_accuracy'))}, "
            f"expected MACs {_ratio(test.get('macs_ratio'))} of the plain model, inputs per exit {test.get('exit_counts')}")
    other = details.get("other_measure") or {}
    if other.get("test"):
        o = other["test"]
        items.append(f"with {other.get('measure')} instead: threshold {o.get('threshold')}, test {fmt.pct(o.get('accuracy'))}, "
                     f"expected MACs {_ratio(o.get('macs_ratio'))}")
    return items


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def export_table(export: dict[str, Any]) -> Table | None:
    """The TFLite chain per precision: accuracy per exit and adaptively at the chosen threshold."""
    rows = []
    for precision, facts in (export.get("precisions") or {}).items():
        adaptive = facts.get("adaptive") or {}
        rows.append([precision, " / ".join(fmt.pct(a) for a in facts.get("exit_accuracy") or []), fmt.pct(adaptive.get("accuracy")),
                     _ratio(adaptive.get("macs_ratio")), str(adaptive.get("exit_counts")), fmt.size(facts.get("size_bytes"))])
    if not rows:
        return None
    headers = ["precision", "accuracy per exit (TFLite)", "adaptive accuracy", "expected MACs", "inputs per exit", "segment files"]
    return Table(headers, rows)


def device_rows(profiles: list[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for p in profiles:
        block = p["early_exit"]
        if block.get("skipped"):
            rows.append([p.get("device", "?"), block.get("precision", "?"), "-", "-", "-", "-", "-", "-", "-", block["skipped"]])
            continue
        chosen: dict[str, Any] = next((t for t in block.get("thresholds", []) if t["threshold"] == block.get("chosen")), {})
        rows.append([
            p.get("device", "?") + (" (emulated)" if p.get("emulated") else ""), block.get("precision", "?"), str(block.get("chosen")),
            fmt.pct(chosen.get("accuracy")), f"{fmt.ms(chosen.get('mean_ms'))} / {fmt.ms(chosen.get('p90_ms'))}",
            fmt.ms(block.get("plain_ms")), _ratio(block.get("speedup")), _ratio(block.get("worst_case_ratio")),
            _exit_costs(block), str(chosen.get("exit_counts")),
        ])
    return rows


def _exit_costs(block: dict[str, Any]) -> str:
    """What an input leaving at each exit costs on the device, as a fraction of the plain model."""
    plain, costs = block.get("plain_ms"), block.get("exit_ms") or []
    if not plain or not costs:
        return "-"
    return " / ".join(f"{c / plain:.2f}" for c in costs)


def curve_plot(profiles: list[dict[str, Any]], path: Path) -> Path | None:
    """Accuracy against mean latency over the threshold grid, one panel per device, one line per
    precision; the plain model and the worst case as markers, the chosen threshold circled."""
    measured = [p for p in profiles if p["early_exit"].get("thresholds")]
    if not measured:
        return None
    devices = sorted({p.get("device", "?") for p in measured})
    fig, axes = plt.subplots(1, len(devices), figsize=(max(7.5, 5.5 * len(devices)), 4.4), squeeze=False)
    colors = [BLUE, GREEN, YELLOW, GREY]
    for ax, device in zip(axes[0, :], devices):
        percents: list[float] = []
        for i, p in enumerate(q for q in measured if q.get("device", "?") == device):
            block, color = p["early_exit"], colors[i % len(colors)]
            rows = sorted(block["thresholds"], key=lambda t: t["mean_ms"])
            xs, ys = [t["mean_ms"] for t in rows], [t["accuracy"] * 100 for t in rows]
            ax.plot(xs, ys, marker="o", ms=4, color=color, label=f"{block['precision']} early exit")
            ax.scatter([block["plain_ms"]], [block["plain_accuracy"] * 100], marker="*", s=140, color=color, edgecolor="black",
                       zorder=3, label=f"{block['precision']} plain model")
            ax.scatter([block["worst_case_ms"]], [block["worst_case_accuracy"] * 100], marker="x", s=60, color=color, zorder=3,
                       label=f"{block['precision']} no exit fires")
            chosen = next((t for t in rows if t["threshold"] == block["chosen"]), None)
            if chosen:
                ax.scatter([chosen["mean_ms"]], [chosen["accuracy"] * 100], s=220, facecolors="none", edgecolors="black", zorder=4)
                ax.annotate(f"chosen {block['chosen']:g}", (chosen["mean_ms"], chosen["accuracy"] * 100), xytext=(6, -12),
                            textcoords="offset points", fontsize=8)
            percents += ys + [block["plain_accuracy"] * 100]
        ax.set_ylim(*accuracy_limits(percents))
        ax.set_ylabel("accuracy, % (test inputs)")
        ax.set_xlabel("mean latency per input, ms")
        emulated = any(p.get("emulated") for p in measured if p.get("device") == device)
        ax.set_title(device + (" (emulated: relative only)" if emulated else ""), fontsize=10, loc="left")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    return _save(fig, path, "Early exit: accuracy vs mean latency per threshold (star: plain model, x: no exit fires)")


def histogram_plot(details: dict[str, Any], profiles: list[dict[str, Any]], path: Path) -> Path | None:
    """Inputs leaving at each exit at the chosen threshold: torch on the test split, and each device run."""
    series: list[tuple[str, list[int]]] = []
    if (details.get("test") or {}).get("exit_counts"):
        series.append(("torch (test)", details["test"]["exit_counts"]))
    for p in profiles:
        block = p["early_exit"]
        chosen = next((t for t in block.get("thresholds", []) if t["threshold"] == block.get("chosen")), None)
        if chosen:
            series.append((f"{p.get('device', '?')} {block['precision']}", chosen["exit_counts"]))
    if not series:
        return None
    exits = max(len(c) for _, c in series)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * exits + 3), 3.6))
    width = 0.8 / len(series)
    colors = [GREY, BLUE, GREEN, YELLOW]
    for i, (label, counts) in enumerate(series):
        total = max(sum(counts), 1)
        xs = [k + (i - (len(series) - 1) / 2) * width for k in range(len(counts))]
        ax.bar(xs, [100 * c / total for c in counts], width=width, color=colors[i % len(colors)], label=label)
    ax.set_xticks(range(exits), [f"exit {k + 1}" if k < exits - 1 else "final" for k in range(exits)])
    ax.set_ylabel("inputs, %")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    return _save(fig, path, "Early exit: where inputs leave at the chosen threshold")


def _save(fig: Any, path: Path, title: str) -> Path:
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def exit_profiles(ctx: ReportContext) -> list[dict[str, Any]]:
    """The run's profiles that carry an `early_exit` block."""
    out = []
    for path in ctx.run.profile_paths(ctx.metrics):
        profile = read_json(path)
        if isinstance(profile, dict) and isinstance(profile.get("early_exit"), dict):
            out.append(profile)
    return out


@register_section("early_exit")
def early_exit_section(ctx: ReportContext) -> Section | None:
    stages = ctx.details_of("early_exit")
    if not stages:
        return None
    _, details = stages[-1]
    blocks: list[Block] = [Bullets(stage_items(details))]
    exports = [d["early_exit"] for _, d in ctx.details_of("export") if isinstance(d.get("early_exit"), dict)]
    table = export_table(exports[-1]) if exports else None
    if table:
        blocks.append(table)
    profiles = exit_profiles(ctx)
    rows = device_rows(profiles)
    if rows:
        blocks.append(Table(["device", "precision", "threshold", "accuracy", "mean / p90 ms", "plain ms", "speed-up",
                             "worst case", "cost to each exit (x plain)", "inputs per exit"], rows))
    if ctx.plots:
        blocks += ctx.figure(curve_plot(profiles, ctx.plot_path(CURVE_PLOT)), "Early exit: accuracy vs mean latency per device")
        blocks += ctx.figure(histogram_plot(details, profiles, ctx.plot_path(HISTOGRAM_PLOT)), "Early exit: inputs per exit")
    return Section("early_exit", "Early exits", blocks)
