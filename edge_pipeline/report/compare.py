"""Compare device profiles side by side: device x model table, fastest/smallest per device, plots.

Input paths are profile JSON files (`profiles/<device>__<model>.json`) or run dirs (their
`metrics.json` names the profiles and gives each TFLite file's stage, precision and accuracy).
A profile file inside a run's `profiles/` folder picks up the same facts from that run.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

from ..errors import UserError

FASTEST, SMALLEST = "fastest", "smallest"


@dataclass
class Entry:
    """One model on one device."""

    device: str
    model: str  # label shown in tables and plots (unique within a comparison)
    file: str  # the model's file name
    run: str | None = None
    stage: str | None = None
    precision: str | None = None
    median_ms: float | None = None
    p90_ms: float | None = None
    std_ms: float | None = None
    peak_mb: float | None = None
    size_bytes: int | None = None
    accuracy: float | None = None
    valid: bool = True
    emulated: bool = False
    outputs_match: bool | None = None
    sha256: str | None = None
    marks: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read ({exc})") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object")
    return data


def _artifact_facts(run_dir: Path, metrics: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """TFLite file name -> {stage, precision, accuracy, size_bytes} from a run's metrics.json."""
    facts = {}
    for entry in metrics.get("stages", []):
        for art in entry.get("artifacts", []):
            facts[Path(art["path"]).name] = {"stage": entry["name"], "precision": art.get("precision"),
                                             "accuracy": art.get("accuracy"), "size_bytes": art.get("size_bytes")}
    return facts


def entry_from_profile(profile: dict[str, Any], path: Path, run: str | None = None,
                       facts: dict[str, dict[str, Any]] | None = None) -> Entry:
    missing = [k for k in ("device", "model", "latency_ms") if k not in profile]
    if missing:
        raise UserError(f"{path}: not a profile file (missing {', '.join(missing)}); expected profiles/<device>__<model>.json")
    lat = profile["latency_ms"] or {}
    fact = (facts or {}).get(profile["model"], {})
    check = profile.get("outputs_check") or {}
    notes = list(profile.get("invalid_reasons") or [])
    if check and not check.get("match", True):
        notes.append("outputs differ from the host")
    return Entry(
        device=profile["device"], model=Path(profile["model"]).stem, file=profile["model"], run=run,
        stage=fact.get("stage"), precision=fact.get("precision"), median_ms=lat.get("median"), p90_ms=lat.get("p90"),
        std_ms=lat.get("std"), peak_mb=profile.get("peak_rss_mb"),
        size_bytes=profile.get("model_size_bytes", fact.get("size_bytes")), accuracy=fact.get("accuracy"),
        valid=bool(profile.get("valid", True)), emulated=bool(profile.get("emulated", False)),
        outputs_match=check.get("match") if check else None, sha256=profile.get("model_sha256"), notes=notes,
    )


def _run_entries(run_dir: Path) -> list[Entry]:
    metrics = _read_json(run_dir / "metrics.json")
    facts = _artifact_facts(run_dir, metrics)
    run = metrics.get("recipe") or run_dir.name
    out = []
    for stage in metrics.get("stages", []):
        for rel in stage.get("profiles", []):
            path = run_dir / rel
            if not path.is_file():
                raise UserError(f"{path}: listed in {run_dir / 'metrics.json'} but missing; rerun the recipe")
            out.append(entry_from_profile(_read_json(path), path, run, facts))
    return out


def load_entries(paths: Iterable[str | Path]) -> list[Entry]:
    entries: list[Entry] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            if (path / "metrics.json").is_file():
                found = _run_entries(path)
            else:
                files = sorted(path.glob("*.json"))
                found = [entry_from_profile(_read_json(f), f) for f in files]
            if not found:
                raise UserError(f"{path}: no profiles here (a run dir with a profile stage, or a folder of profile JSON files)")
            entries += found
        elif path.is_file():
            run_dir = path.parent.parent
            facts, run = None, None
            if path.parent.name == "profiles" and (run_dir / "metrics.json").is_file():
                metrics = _read_json(run_dir / "metrics.json")
                facts, run = _artifact_facts(run_dir, metrics), metrics.get("recipe") or run_dir.name
            entries.append(entry_from_profile(_read_json(path), path, run, facts))
        else:
            raise UserError(f"{path}: no such file or directory (give profile JSON files or run dirs)")
    if not entries:
        raise UserError("nothing to compare: give profile JSON files or run dirs")
    _unique_labels(entries)
    mark_best(entries)
    return entries


def _unique_labels(entries: list[Entry]) -> None:
    """Prefix the run name when models from several runs share a file name; then a hash if still ambiguous."""
    runs_per_model: dict[str, set] = {}
    for e in entries:
        runs_per_model.setdefault(e.model, set()).add(e.run)
    for e in entries:
        if len(runs_per_model[e.model]) > 1 and e.run:
            e.model = f"{e.run}/{e.model}"
    seen: dict[tuple[str, str], str | None] = {}
    for e in entries:
        key = (e.device, e.model)
        if key in seen and seen[key] != e.sha256 and e.sha256:
            e.model = f"{e.model}@{e.sha256[:8]}"
        seen.setdefault(key, e.sha256)


def mark_best(entries: list[Entry]) -> None:
    """Per device: the fastest valid model (lowest median) and the smallest file."""
    by_device: dict[str, list[Entry]] = {}
    for e in entries:
        e.marks = []
        by_device.setdefault(e.device, []).append(e)
    for group in by_device.values():
        timed = [e for e in group if e.valid and e.median_ms is not None] or [e for e in group if e.median_ms is not None]
        if len(group) > 1 and timed:
            min(timed, key=lambda e: e.median_ms).marks.append(FASTEST)
        sized = [e for e in group if e.size_bytes is not None]
        if len(group) > 1 and sized:
            smallest = min(e.size_bytes for e in sized)
            for e in sized:
                if e.size_bytes == smallest:
                    e.marks.append(SMALLEST)


HEADERS = ["device", "model", "median ms", "p90 ms", "std ms", "peak MB", "size", "accuracy", "valid", "best"]


def _fmt(value: float | None, pattern: str) -> str:
    return "-" if value is None else format(value, pattern)


def cells(e: Entry) -> list[str]:
    from .table import fmt_bytes

    device = e.device + (" (emulated)" if e.emulated else "")
    valid = "yes" if e.valid else "no: " + "; ".join(e.notes)
    if e.valid and e.outputs_match is False:
        valid = "yes; outputs differ from the host"
    return [
        device, e.model, _fmt(e.median_ms, ".3f"), _fmt(e.p90_ms, ".3f"), _fmt(e.std_ms, ".3f"), _fmt(e.peak_mb, ".1f"),
        fmt_bytes(e.size_bytes), _fmt(e.accuracy * 100 if e.accuracy is not None else None, ".2f"), valid,
        ", ".join(e.marks),
    ]


def sorted_entries(entries: list[Entry]) -> list[Entry]:
    return sorted(entries, key=lambda e: (e.device, e.median_ms if e.median_ms is not None else float("inf"), e.model))


def markdown_table(entries: list[Entry]) -> str:
    lines = ["| " + " | ".join(HEADERS) + " |", "|" + "|".join("---" for _ in HEADERS) + "|"]
    for e in sorted_entries(entries):
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells(e)) + " |")
    notes = []
    if any(e.emulated for e in entries):
        notes.append("- Emulated devices (qemu user mode): latency is only comparable between models on the same emulator, never as device time.")
    notes.append("- Latency is per inference, batch 1; accuracy is top-1 on the run's held-out test split (%), where known.")
    return "\n".join(lines) + "\n\n" + "\n".join(notes) + "\n"


def print_compare(entries: list[Entry], title: str = "devices x models") -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, header_style="bold")
    for header in HEADERS:
        table.add_column(header, justify="left" if header in ("device", "model", "valid", "best") else "right")
    for e in sorted_entries(entries):
        row = cells(e)
        if FASTEST in e.marks:
            row[2] = f"[bold green]{row[2]}[/]"
        if SMALLEST in e.marks:
            row[6] = f"[bold green]{row[6]}[/]"
        table.add_row(*row)
    Console(width=200).print(table)


def write_plots(entries: list[Entry], plots_dir: Path) -> list[Path]:
    from .plots import accuracy_vs_latency_plot, latency_plot

    plots_dir.mkdir(parents=True, exist_ok=True)
    written = [latency_plot(entries, plots_dir / "latency_by_device.png")]
    accuracy = accuracy_vs_latency_plot(entries, plots_dir / "accuracy_vs_latency.png")
    if accuracy is not None:
        written.append(accuracy)
    return written


def write_compare(entries: list[Entry], out_dir: Path, title: str = "Device comparison") -> dict[str, Path]:
    """compare.md, report.html (plots embedded by relative path), compare.json and plots/*.png."""
    from ..artifacts import atomic_write_json, atomic_write_text
    from .render import _markdown_to_html
    import html

    out_dir.mkdir(parents=True, exist_ok=True)
    plots = write_plots(entries, out_dir / "plots")
    rel = [p.relative_to(out_dir).as_posix() for p in plots]
    body = markdown_table(entries)
    md = f"# {title}\n\n{body}\n" + "".join(f"![{Path(r).stem}]({r})\n" for r in rel)
    atomic_write_text(out_dir / "compare.md", md)
    page = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>body{{font-family:sans-serif}}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
        "td:first-child,td:nth-child(2){text-align:left}img{max-width:100%}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>{_markdown_to_html(body)}"
        + "".join(f"<img src='{html.escape(r)}' alt='{html.escape(Path(r).stem)}'>" for r in rel)
        + "</body></html>\n"
    )
    atomic_write_text(out_dir / "report.html", page)
    atomic_write_json(out_dir / "compare.json", {"entries": [asdict(e) for e in sorted_entries(entries)]})
    return {"markdown": out_dir / "compare.md", "html": out_dir / "report.html", "json": out_dir / "compare.json",
            **{p.stem: p for p in plots}}
