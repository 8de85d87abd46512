"""PNG plots for reports (matplotlib, Agg backend: no display needed).

- `stages_plot`: accuracy and file size of every model the run produced, in stage order: what each
  stage cost and bought.
- `latency_plot`: median latency (bar) and p90 (whisker) per model, one panel per device, since an
  emulated device and a host differ by two orders of magnitude and share no useful axis.
- `accuracy_vs_latency_plot`: accuracy against median latency, one point per TFLite model, labelled
  by stage/precision, one panel per device; None when no model has a known accuracy.

Accuracy axes stay inside [0, 100] %: a margin that reads "105 %" misleads.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg", force=True)
import matplotlib.pyplot as plt

from .records import FASTEST, TORCH, ModelRecord

DPI = 100
BLUE, GREEN, YELLOW, GREY = "#457b9d", "#2a9d8f", "#e9c46a", "#8d99ae"


def _save(fig: Any, path: Path, title: str) -> Path:
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def accuracy_limits(percents: Sequence[float]) -> tuple[float, float]:
    """Y limits around the points with some room, never below 0 % nor above 100 %."""
    low, high = min(percents), max(percents)
    pad = max((high - low) * 0.15, 1.0)
    return max(0.0, low - pad), min(100.0, high + pad)


def _accuracy_axis(ax: Any, percents: Sequence[float]) -> None:
    ax.set_ylim(*accuracy_limits(percents))
    ax.set_ylabel("accuracy, % (held-out test split)")
    ax.grid(alpha=0.3)


def _by_device(records: list[ModelRecord]) -> dict[str, list[ModelRecord]]:
    groups: dict[str, list[ModelRecord]] = {}
    for r in sorted(records, key=lambda r: (r.device or "", r.model)):
        groups.setdefault(r.device or "-", []).append(r)
    return groups


def _device_title(device: str, group: list[ModelRecord]) -> str:
    return device + (" (emulated: relative only)" if any(r.emulated for r in group) else "")


def _one_per_model(records: list[ModelRecord]) -> list[ModelRecord]:
    """The stage table lists an exported file once per device; its accuracy and size are the same."""
    seen, out = set(), []
    for r in records:
        if (r.stage, r.kind) not in seen:
            seen.add((r.stage, r.kind))
            out.append(r)
    return out


def stages_plot(records: list[ModelRecord], path: Path) -> Path | None:
    models = [r for r in _one_per_model(records) if r.accuracy is not None or r.size_bytes is not None]
    if not models:
        return None
    labels = [r.stage if r.runtime == TORCH else f"{r.stage}\n{r.precision}" for r in models]
    x = list(range(len(models)))
    colors = [BLUE if r.runtime == TORCH else GREEN for r in models]
    fig, (acc_ax, size_ax) = plt.subplots(1, 2, figsize=(max(8.0, 1.3 * len(models) + 3), 3.8))
    known = [(xi, r.accuracy * 100) for xi, r in zip(x, models) if r.accuracy is not None]
    if known:
        acc_ax.plot([k[0] for k in known], [k[1] for k in known], color=GREY, zorder=1)
        acc_ax.scatter([k[0] for k in known], [k[1] for k in known], c=[colors[k[0]] for k in known], s=40, zorder=2, clip_on=False)
        for xi, value in known:
            acc_ax.annotate(f"{value:.1f}", (xi, value), xytext=(0, 6), textcoords="offset points", ha="center", fontsize=8)
        _accuracy_axis(acc_ax, [k[1] for k in known])
    acc_ax.set_title("accuracy", fontsize=10, loc="left", pad=14)
    sizes = [(r.size_bytes or 0) / 1024 for r in models]
    size_ax.bar(x, sizes, color=colors)
    for xi, kb in zip(x, sizes):
        size_ax.annotate(f"{kb:.1f}", (xi, kb), xytext=(0, 3), textcoords="offset points", ha="center", fontsize=8)
    size_ax.set_ylabel("file size, KB")
    size_ax.set_title("size (blue: torch, green: TFLite)", fontsize=10, loc="left", pad=14)
    for ax in (acc_ax, size_ax):
        ax.set_xticks(x, labels, fontsize=8)
        ax.set_xlim(-0.6, len(models) - 0.4)
    return _save(fig, path, "What each stage cost and bought")


def latency_plot(records: list[ModelRecord], path: Path) -> Path:
    groups = {d: [r for r in g if r.median_ms is not None] for d, g in _by_device(records).items()}
    groups = {d: g for d, g in groups.items() if g}
    n = max(1, len(groups))
    rows = max((len(g) for g in groups.values()), default=1)
    fig, axes = plt.subplots(n, 1, figsize=(8, 1.2 + n * (0.9 + 0.35 * rows)), squeeze=False)
    for ax, (device, group) in zip(axes[:, 0], groups.items()):
        medians = [float(r.median_ms or 0.0) for r in group]
        upper = [max((r.p90_ms or m) - m, 0.0) for r, m in zip(group, medians)]
        colors = [GREEN if FASTEST in r.marks else (YELLOW if r.valid is False else (GREY if r.baseline else BLUE)) for r in group]
        y = list(range(len(group)))
        ax.barh(y, medians, xerr=[[0.0] * len(group), upper], color=colors, capsize=3)
        ax.set_yticks(y, [r.model for r in group])
        ax.invert_yaxis()
        ax.set_title(_device_title(device, group), fontsize=10, loc="left")
        ax.set_xlabel("median latency, ms (whisker: p90)")
        for yi, value, extra in zip(y, medians, upper):
            ax.annotate(f"{value:.3g}", (value + extra, yi), xytext=(6, 0), textcoords="offset points", va="center", fontsize=8)
        ax.set_xlim(0, max(m + u for m, u in zip(medians, upper)) * 1.2 or 1.0)
    if not groups:
        axes[0, 0].text(0.5, 0.5, "no latency measured", ha="center", va="center")
        axes[0, 0].set_axis_off()
    return _save(fig, path, "Latency per device and model (green: fastest, yellow: invalid run, grey: baseline)")


def _point_label(r: ModelRecord) -> str:
    run = r.run if r.run and r.model.startswith(f"{r.run}/") else None
    return "/".join(x for x in (run, r.stage, r.precision) if x) or r.model


def accuracy_vs_latency_plot(records: list[ModelRecord], path: Path) -> Path | None:
    points = [r for r in records if r.accuracy is not None and r.median_ms is not None]
    if not points:
        return None
    groups = _by_device(points)
    fig, axes = plt.subplots(1, len(groups), figsize=(5.5 * len(groups), 4.2), squeeze=False)
    markers: dict[str, str] = {}
    for ax, (device, group) in zip(axes[0, :], groups.items()):
        for r in group:
            marker = markers.setdefault(r.stage or r.run or "model", "osD^v<>ph*"[len(markers) % 10])
            accuracy = float(r.accuracy or 0.0) * 100
            ax.scatter(r.median_ms, accuracy, marker=marker, s=48, color=GREEN if FASTEST in r.marks else BLUE, clip_on=False)
            ax.annotate(_point_label(r), (r.median_ms, accuracy), xytext=(4, 4), textcoords="offset points", fontsize=8)
        ax.set_title(_device_title(device, group), fontsize=10, loc="left")
        ax.set_xlabel("median latency, ms")
        ax.margins(x=0.25)
        _accuracy_axis(ax, [float(r.accuracy or 0.0) * 100 for r in group])
    return _save(fig, path, "Accuracy vs latency per stage and precision")
