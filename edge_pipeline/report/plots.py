"""PNG plots for reports (matplotlib, Agg backend: no display needed).

- `latency_plot`: median latency (bar) and p90 (whisker) per model, one panel per device, since an
  emulated device and a host differ by two orders of magnitude and share no useful axis.
- `accuracy_vs_latency_plot`: accuracy against median latency, one point per TFLite model, labelled
  by stage/precision, one panel per device; None when no model has a known accuracy.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from .compare import Entry

DPI = 100


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _by_device(entries: list["Entry"]) -> dict[str, list["Entry"]]:
    groups: dict[str, list["Entry"]] = {}
    for e in sorted(entries, key=lambda e: (e.device, e.model)):
        groups.setdefault(e.device, []).append(e)
    return groups


def _title(device: str, group: list["Entry"]) -> str:
    return device + (" (emulated: relative only)" if any(e.emulated for e in group) else "")


def latency_plot(entries: list["Entry"], path: Path) -> Path:
    plt = _pyplot()
    groups = {d: [e for e in g if e.median_ms is not None] for d, g in _by_device(entries).items()}
    groups = {d: g for d, g in groups.items() if g}
    n = max(1, len(groups))
    rows = max((len(g) for g in groups.values()), default=1)
    fig, axes = plt.subplots(n, 1, figsize=(8, 1.2 + n * (0.9 + 0.35 * rows)), squeeze=False)
    for ax, (device, group) in zip(axes[:, 0], groups.items()):
        labels = [e.model for e in group]
        medians = [e.median_ms for e in group]
        upper = [max((e.p90_ms or e.median_ms) - e.median_ms, 0.0) for e in group]
        colors = ["#2a9d8f" if "fastest" in e.marks else ("#e9c46a" if not e.valid else "#457b9d") for e in group]
        y = list(range(len(group)))
        ax.barh(y, medians, xerr=[[0.0] * len(group), upper], color=colors, capsize=3)
        ax.set_yticks(y, labels)
        ax.invert_yaxis()
        ax.set_title(_title(device, group), fontsize=10, loc="left")
        ax.set_xlabel("median latency, ms (whisker: p90)")
        for yi, value, extra in zip(y, medians, upper):
            ax.annotate(f"{value:.3g}", (value + extra, yi), xytext=(6, 0), textcoords="offset points", va="center", fontsize=8)
        ax.set_xlim(0, max(m + u for m, u in zip(medians, upper)) * 1.2)
    if not groups:
        axes[0, 0].text(0.5, 0.5, "no latency measured", ha="center", va="center")
        axes[0, 0].set_axis_off()
    fig.suptitle("Latency per device and model (green: fastest, yellow: invalid run)", fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def accuracy_vs_latency_plot(entries: list["Entry"], path: Path) -> Path | None:
    points = [e for e in entries if e.accuracy is not None and e.median_ms is not None]
    if not points:
        return None
    plt = _pyplot()
    groups = _by_device(points)
    fig, axes = plt.subplots(1, len(groups), figsize=(5.5 * len(groups), 4.2), squeeze=False)
    markers = {}
    for ax, (device, group) in zip(axes[0, :], groups.items()):
        for e in group:
            key = e.stage or e.run or "model"
            marker = markers.setdefault(key, "osD^v<>ph*"[len(markers) % 10])
            ax.scatter(e.median_ms, e.accuracy * 100, marker=marker, s=48,
                       color="#2a9d8f" if "fastest" in e.marks else "#457b9d")
            label = "/".join(x for x in (e.run if e.model.startswith(f"{e.run}/") else None, e.stage, e.precision) if x) or e.model
            ax.annotate(label, (e.median_ms, e.accuracy * 100), xytext=(4, 4), textcoords="offset points", fontsize=8)
        ax.set_title(_title(device, group), fontsize=10, loc="left")
        ax.set_xlabel("median latency, ms")
        ax.set_ylabel("accuracy, % (held-out test split)")
        ax.grid(alpha=0.3)
        ax.margins(0.25)
    fig.suptitle("Accuracy vs latency per stage and precision", fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path
