"""A sweep's report, rendered from its `sweep.json` (DESIGN.md, "Sweep contract"): the variant x
device table, the best variant per device with its reason, and per-device Pareto plots
(accuracy vs measured latency, accuracy vs file size; the front joined by a line, the best starred).
Written as sweep.md, report.html and plots/pareto_<device>.png; the table also goes to the terminal.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..artifacts import atomic_write_text
from ..rundir import PLOTS_DIR
from . import fmt
from .doc import BAD, GOOD, Bullets, Cell, Figure, Paragraph, Section, Table, document_markdown
from .htmlpage import PageHeader, html_page
from .plots import BLUE, GREEN, GREY, YELLOW, _accuracy_axis, _save, plt
from .terminal import print_rich

HEADERS = ["variant", "settings", "device", "file", "accuracy", "size", "MACs", "median ms", "peak MB", "valid", "status"]
MARKDOWN_FILE = "sweep.md"
HTML_FILE = "report.html"


def settings_text(settings: dict[str, Any]) -> str:
    return ", ".join(f"{k.removeprefix('stages.')}={json.dumps(v) if isinstance(v, (dict, list)) else v}"
                     for k, v in settings.items())


def _status_cell(row: dict[str, Any], device_entry: dict[str, Any] | None) -> Cell:
    if row["status"] != "done":
        return Cell(f"{row['status']}: {row['error']}" if row.get("error") else row["status"], BAD)
    if not device_entry or device_entry.get("file") is None:
        return Cell((device_entry or {}).get("reason") or "nothing measured", BAD)
    return Cell("done")


def _valid_cell(entry: dict[str, Any]) -> Cell:
    valid = entry.get("valid")
    if valid is None:
        return Cell(fmt.DASH)
    text = "yes" if valid else "no"
    if entry.get("emulated"):
        text += " (emulated)"
    return Cell(text, None if valid else BAD)


def table(sweep: dict[str, Any]) -> Table:
    rows = []
    for row in sweep["variants"]:
        devices = sweep["devices"] if row["status"] == "done" else sweep["devices"][:1]
        for device in devices or ["-"]:
            entry = row["profiles"].get(device) or {}
            winner = sweep["best"].get(device) == row["id"]
            on_front = row["id"] in sweep["pareto"].get(device, [])
            label = row["id"] + (" (best)" if winner else (" (front)" if on_front else ""))
            rows.append([
                Cell(label, GOOD if winner else None), settings_text(row["set"]), device,
                Path(entry["file"]).name if entry.get("file") else fmt.DASH,
                fmt.pct(entry.get("accuracy")), fmt.size(entry.get("size_bytes")), fmt.count(row.get("macs")),
                fmt.ms(entry.get("median_ms")), fmt.mb(entry.get("peak_mb")), _valid_cell(entry),
                _status_cell(row, entry if row["status"] == "done" else None),
            ])
    return Table(HEADERS, rows)


def pareto_plot(sweep: dict[str, Any], device: str, path: Path) -> Path | None:
    """Two panels: accuracy vs median latency and accuracy vs size, one point per variant."""
    points = [(row["id"], row["profiles"].get(device) or {}) for row in sweep["variants"] if row["status"] == "done"]
    points = [(vid, e) for vid, e in points if e.get("accuracy") is not None]
    if not points:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), squeeze=False)
    panels = (("median_ms", "median latency, ms (measured)", sweep["pareto"].get(device, [])),
              ("size_bytes", "file size, KB", sweep.get("pareto_size", {}).get(device, [])))
    winner = sweep["best"].get(device)
    for ax, (cost, label, on_front) in zip(axes[0, :], panels):
        scale = 1024.0 if cost == "size_bytes" else 1.0
        shown = [(vid, e[cost] / scale, e["accuracy"] * 100, e) for vid, e in points if e.get(cost) is not None]
        for vid, x, y, e in shown:
            color = GREEN if vid == winner else (BLUE if vid in on_front else GREY)
            color = YELLOW if e.get("valid") is False and vid != winner else color
            ax.scatter(x, y, s=140 if vid == winner else 44, marker="*" if vid == winner else "o", color=color, zorder=3)
            ax.annotate(vid, (x, y), xytext=(4, 4), textcoords="offset points", fontsize=8)
        line = [(x, y) for vid in on_front for v, x, y, _ in shown if v == vid]
        if len(line) > 1:
            ax.step([x for x, _ in line], [y for _, y in line], where="post", color=BLUE, alpha=0.5, zorder=2)
        ax.set_xlabel(label)
        ax.margins(x=0.2)
        if shown:
            _accuracy_axis(ax, [y for _, _, y, _ in shown])
    emulated = any(e.get("emulated") for _, e in points)
    title = f"{device}{' (emulated: relative only)' if emulated else ''}: accuracy vs cost (line: Pareto front, star: best)"
    return _save(fig, path, title)


def sections(sweep: dict[str, Any], plots: dict[str, Path], base: Path) -> list[Section]:
    runs = sweep["stage_runs"]
    total = runs["computed"] + runs["cached"]
    summary = [
        f"{len(sweep['variants'])} variants ({sum(r['status'] == 'done' for r in sweep['variants'])} done) on "
        f"{', '.join(sweep['devices']) or 'no device'}",
        f"stages computed {runs['computed']} of {total}; reused {runs['cached']} (shared store or earlier run)",
    ]
    best_lines = [f"**{device}**: {sweep['best_reason'].get(device, '')}" for device in sweep["devices"]]
    out = [Section("summary", "Summary", [Bullets(summary), Paragraph("Best variant per device:"), Bullets(best_lines)]),
           Section("variants", "Variants x devices", [
               Paragraph("Each variant's file to ship on each device (the fastest precision that passes the accuracy "
                         "gates); accuracy is top-1 on the held-out test split, latency the measured median, batch 1."),
               table(sweep)])]
    figures = [Figure(str(p.relative_to(base)), f"Pareto fronts on {d}") for d, p in plots.items()]
    if figures:
        out.append(Section("pareto", "Pareto fronts", [*figures]))
    failed = [f"{r['id']} ({settings_text(r['set'])}): {r['status']}: {r.get('error') or ''}" for r in sweep["variants"]
              if r["status"] != "done"]
    if failed:
        out.append(Section("failed", "Failed variants", [Bullets(failed)]))
    return out


def write_sweep_report(folder: Path, sweep: dict[str, Any]) -> dict[str, Path]:
    plots: dict[str, Path] = {}
    for device in sweep["devices"]:
        path = pareto_plot(sweep, device, folder / PLOTS_DIR / f"pareto_{device}.png")
        if path is not None:
            plots[device] = path
    parts = sections(sweep, plots, folder)
    title = f"Sweep {sweep['name']}"
    intro = f"Recipe {sweep['recipe']}; axes: " + "; ".join(f"{a['path']} = {a['values']}" for a in sweep["axes"])
    atomic_write_text(folder / MARKDOWN_FILE, document_markdown(title, intro, parts))
    header = PageHeader([("recipe", str(sweep["recipe"])), ("variants", str(len(sweep["variants"]))),
                         ("devices", ", ".join(sweep["devices"]))])
    atomic_write_text(folder / HTML_FILE, html_page(title, parts, folder, header))
    return {"markdown": folder / MARKDOWN_FILE, "html": folder / HTML_FILE, **{f"plot:{d}": p for d, p in plots.items()}}


def print_sweep(sweep: dict[str, Any]) -> None:
    print_rich(table(sweep), f"sweep {sweep['name']}: variants x devices")
    for device in sweep["devices"]:
        print(f"best: {sweep['best_reason'].get(device, device)}")
