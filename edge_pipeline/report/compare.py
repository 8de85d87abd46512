"""Compare device profiles side by side: device x model table, fastest/smallest per device, plots.

Input paths are profile JSON files (`profiles/<device>__<model>.json`), folders of them, or run
folders (their `metrics.json` names the profiles and gives each TFLite file's stage, precision and
accuracy). A profile file inside a run's profiles folder picks up the same facts from that run.
The run report's Devices section shows the same table (`device_blocks`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

from ..artifacts import atomic_write_json, atomic_write_text
from ..errors import UserError
from ..rundir import PLOTS_DIR, RunDir
from . import fmt
from .doc import BAD, GOOD, Block, Bullets, Cell, Figure, Paragraph, Section, Table, blocks_markdown
from .htmlpage import PageHeader, html_page
from .plots import accuracy_vs_latency_plot, latency_plot
from .records import FASTEST, SMALLEST, ModelRecord, build_record, facts_by_file, profile_records, read_profile, run_name
from .shipping import Gain, baseline_notes, gains, ratio_text, run_recommendations
from .terminal import print_rich

__all__ = ["FASTEST", "SMALLEST", "load_baseline_notes", "load_records", "load_recommendations", "mark_best", "print_compare",
           "write_compare"]

# (run label or None, a recommendation as metrics.json records it)
Recommendation = tuple[str | None, dict[str, Any]]

HEADERS = ["device", "model", "median ms", "p90 ms", "std ms", "peak MB", "size", "accuracy", "valid", "best"]
EMULATED_NOTE = ("Emulated devices (qemu user mode): latency is only comparable between models on the same emulator, "
                 "never as device time.")
UNITS_NOTE = "Latency is per inference, batch 1; accuracy is top-1 on the run's held-out test split, where known."
GAIN_HEADERS = ["device", "model", "median ms", "baseline ms", "speed-up", "size vs baseline",
                "baseline fp32 ms", "speed-up vs fp32", "size vs fp32"]
SHIP_RULE = ("the fastest precision measured there that passes the accuracy gates (float32 is the reference) and fits "
             "the device's memory (when its device file gives one).")


def _profile_file_record(path: Path) -> ModelRecord:
    """A profile file alone, or with the facts of the run whose profiles folder holds it."""
    profile = read_profile(path)
    run = RunDir.of_profile(path)
    if run is None:
        return build_record(None, profile)
    metrics = run.read_metrics()
    return build_record(facts_by_file(metrics).get(profile["model"]), profile, run_name(run, metrics))


def _folder_records(path: Path) -> list[ModelRecord]:
    run = RunDir(path)
    if run.is_run():
        found = profile_records(run, run.read_metrics(), label_run=True)
    else:
        found = [build_record(None, read_profile(f)) for f in sorted(path.glob("*.json"))]
    if not found:
        raise UserError(f"{path}: no profiles here (a run dir with a profile stage, or a folder of profile JSON files)")
    return found


def load_records(paths: Iterable[str | Path]) -> list[ModelRecord]:
    records: list[ModelRecord] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            records += _folder_records(path)
        elif path.is_file():
            records.append(_profile_file_record(path))
        else:
            raise UserError(f"{path}: no such file or directory (give profile JSON files or run dirs)")
    if not records:
        raise UserError("nothing to compare: give profile JSON files or run dirs")
    unique_labels(records)
    mark_best(records)
    return records


def load_baseline_notes(paths: Iterable[str | Path]) -> list[str]:
    """Why a run folder among `paths` lacks a baseline comparison (prefixed by run when there are several)."""
    runs = [RunDir(p) for p in paths if Path(p).is_dir() and RunDir(p).is_run()]
    out = []
    for run in runs:
        metrics = run.read_metrics()
        prefix = f"{run_name(run, metrics)}: " if len(runs) > 1 else ""
        out += [prefix + note for note in baseline_notes(metrics)]
    return out


def load_recommendations(paths: Iterable[str | Path]) -> list[Recommendation]:
    """The file to ship per device of every run folder among `paths` (labelled by run when there
    are several); profile files given alone carry no gates, so no recommendation."""
    runs = [RunDir(p) for p in paths if Path(p).is_dir() and RunDir(p).is_run()]
    out: list[Recommendation] = []
    for run in runs:
        metrics = run.read_metrics()
        label = run_name(run, metrics) if len(runs) > 1 else None
        records = profile_records(run, metrics)
        out += [(label, rec) for rec in run_recommendations(run, metrics, records)]
    return out


def unique_labels(records: list[ModelRecord]) -> None:
    """Prefix the run name when models from several runs share a file name; then a hash if still ambiguous."""
    runs_per_model: dict[str, set[str | None]] = {}
    for r in records:
        runs_per_model.setdefault(r.model, set()).add(r.run)
    for r in records:
        if len(runs_per_model[r.model]) > 1 and r.run:
            r.model = f"{r.run}/{r.model}"
    seen: dict[tuple[str | None, str], str | None] = {}
    for r in records:
        key = (r.device, r.model)
        if key in seen and seen[key] != r.sha256 and r.sha256:
            r.model = f"{r.model}@{r.sha256[:8]}"
        seen.setdefault(key, r.sha256)


def mark_best(records: list[ModelRecord]) -> None:
    """Per device: the fastest valid model (lowest median) and the smallest file; the baseline's
    files are there for comparison, not candidates."""
    by_device: dict[str | None, list[ModelRecord]] = {}
    for r in records:
        r.marks = []
        if not r.baseline:
            by_device.setdefault(r.device, []).append(r)
    for group in by_device.values():
        if len(group) < 2:
            continue
        timed = [r for r in group if r.median_ms is not None]
        trusted = [r for r in timed if r.valid is not False] or timed
        if trusted:
            min(trusted, key=lambda r: r.median_ms or 0.0).marks.append(FASTEST)
        sizes = [r.size_bytes for r in group if r.size_bytes is not None]
        for r in group:
            if sizes and r.size_bytes == min(sizes):
                r.marks.append(SMALLEST)


def sorted_records(records: list[ModelRecord]) -> list[ModelRecord]:
    return sorted(records, key=lambda r: (r.device or "", r.median_ms if r.median_ms is not None else float("inf"), r.model))


def _valid_cell(r: ModelRecord) -> Cell:
    if r.valid is False:
        return Cell("no: " + "; ".join(r.notes), BAD)
    if r.outputs_match is False:
        return Cell("yes; outputs differ from the host", BAD)
    return Cell("yes")


def cells(r: ModelRecord) -> list[Cell]:
    fastest = GOOD if FASTEST in r.marks else None
    smallest = GOOD if SMALLEST in r.marks else None
    return [
        Cell((r.device or "-") + (" (emulated)" if r.emulated else "")), Cell(r.model),
        Cell(fmt.ms(r.median_ms), fastest), Cell(fmt.ms(r.p90_ms)), Cell(fmt.ms(r.std_ms)), Cell(fmt.mb(r.peak_mb)),
        Cell(fmt.size(r.size_bytes), smallest), Cell(fmt.pct(r.accuracy)), _valid_cell(r),
        Cell(", ".join(r.marks), GOOD if r.marks else None),
    ]


def compare_table(records: list[ModelRecord]) -> Table:
    return Table(HEADERS, [cells(r) for r in sorted_records(records)])


def print_compare(records: list[ModelRecord], title: str = "devices x models",
                  recommendations: Sequence[Recommendation] | None = None, notes: Sequence[str] = ()) -> None:
    print_rich(compare_table(records), title)
    print_gains(records, notes)
    print_ship_lines(recommendations or [], records)


def print_gains(records: list[ModelRecord], notes: Sequence[str] = ()) -> None:
    """The gains table (when any shipped file has a measured baseline) and the baseline notes."""
    found = gains(records)
    if found:
        print_rich(gains_table(found), "against the trained baseline, same device")
    for note in notes:
        print(note)


def print_ship_lines(recommendations: Sequence[Recommendation], records: list[ModelRecord]) -> None:
    """The file to ship per device, one plain line each (the report's bullets without markup)."""
    for item in ship_bullets(recommendations, records).items:
        print(item.replace("**", ""))


def _device_label(device: str, run: str | None, records: list[ModelRecord]) -> str:
    emulated = any(r.emulated for r in records if r.device == device and r.run == run)
    return (f"{run} / " if run else "") + device + (" (emulated: relative only)" if emulated else "")


def ship_bullets(recommendations: Sequence[Recommendation], records: list[ModelRecord]) -> Bullets:
    """One line per device (and run): the file to ship and why."""
    items = []
    for run, rec in recommendations:
        label = _device_label(str(rec.get("device")), run, records)
        ship = f" File: {rec['ship']}." if rec.get("ship") else ""
        items.append(f"**{label}**: {rec.get('reason', '')}.{ship}")
    return Bullets(items)


def gains_table(gains: list[Gain]) -> Table:
    rows = []
    for g in sorted(gains, key=lambda g: (g.shipped.run or "", g.shipped.device or "", g.shipped.model)):
        r = g.shipped
        rows.append([
            Cell((r.device or "-") + (" (emulated)" if r.emulated else "")), Cell(r.model), Cell(fmt.ms(r.median_ms)),
            Cell(fmt.ms(g.same.median_ms if g.same else None)), Cell(ratio_text(Gain.speedup(g.same, r))),
            Cell(ratio_text(Gain.size_ratio(g.same, r))),
            Cell(fmt.ms(g.float32.median_ms if g.float32 else None)), Cell(ratio_text(Gain.speedup(g.float32, r))),
            Cell(ratio_text(Gain.size_ratio(g.float32, r))),
        ])
    return Table(GAIN_HEADERS, rows)


def gain_blocks(records: list[ModelRecord], notes: Sequence[str] = ()) -> list[Block]:
    """What the recipe bought on each device: each shipped file against the trained baseline's files,
    and why a comparison is missing (`notes`, see shipping.baseline_notes)."""
    found = gains(records)
    if not found:
        return [Bullets(list(notes))] if notes else []
    stages = sorted({r.stage for r in records if r.baseline and r.stage})
    source = f"the {', '.join(stages)} stage's model" if stages else "the trained baseline"
    return [Paragraph(f"**Against the baseline** ({source}, converted the same way and measured on the same device with "
                      "the same settings): speed-up = baseline median / shipped median; size = shipped file / baseline "
                      "file. Each file is compared with the baseline file of its own precision and with the baseline float32."),
            gains_table(found), *([Bullets(list(notes))] if notes else [])]


def device_blocks(records: list[ModelRecord], plots_dir: Path | None, base: Path,
                  recommendations: Sequence[Recommendation] | None = None, baseline_notes: Sequence[str] = ()) -> list[Block]:
    """The file to ship per device, the device x model table, its notes, the gains against the
    baseline and (when `plots_dir` is given) its plots, paths relative to `base`."""
    notes = ([EMULATED_NOTE] if any(r.emulated for r in records) else []) + [UNITS_NOTE]
    blocks: list[Block] = [Bullets(notes)]
    if recommendations:
        blocks += [Paragraph(f"**File to ship** per device: {SHIP_RULE}"), ship_bullets(recommendations, records)]
    blocks += [compare_table(records), *gain_blocks(records, baseline_notes)]
    if plots_dir is not None:
        latency = latency_plot(records, plots_dir / "latency_by_device.png")
        blocks.append(Figure(latency.relative_to(base).as_posix(), "latency_by_device"))
        accuracy = accuracy_vs_latency_plot(records, plots_dir / "accuracy_vs_latency.png")
        if accuracy is not None:
            blocks.append(Figure(accuracy.relative_to(base).as_posix(), "accuracy_vs_latency"))
    return blocks


def write_compare(records: list[ModelRecord], out_dir: Path, title: str = "Device comparison",
                  recommendations: Sequence[Recommendation] | None = None, notes: Sequence[str] = ()) -> dict[str, Path]:
    """compare.md, report.html (plots embedded), compare.json and plots/*.png in `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    blocks = device_blocks(records, out_dir / PLOTS_DIR, out_dir, recommendations, notes)
    section = Section("devices", "Devices x models", blocks)
    atomic_write_text(out_dir / "compare.md", f"# {title}\n\n{blocks_markdown(blocks)}\n")
    runs = sorted({r.run for r in records if r.run})
    header = PageHeader(facts=[("written", datetime.now().strftime("%Y-%m-%d %H:%M")),
                               ("runs", ", ".join(runs) or "-"), ("profiles", str(len(records)))])
    atomic_write_text(out_dir / "report.html", html_page(title, [section], out_dir, header))
    atomic_write_json(out_dir / "compare.json", {
        "entries": [asdict(r) for r in sorted_records(records)],
        "recommendations": [{"run": run, **rec} for run, rec in recommendations or []],
        "gains": [{"run": g.shipped.run, "device": g.shipped.device, "model": g.shipped.model,
                   "precision": g.shipped.precision, "median_ms": g.shipped.median_ms,
                   "speedup": Gain.speedup(g.same, g.shipped), "size_ratio": Gain.size_ratio(g.same, g.shipped),
                   "speedup_vs_float32": Gain.speedup(g.float32, g.shipped),
                   "size_ratio_vs_float32": Gain.size_ratio(g.float32, g.shipped)} for g in gains(records)],
    })
    figures = [out_dir / b.path for b in blocks if isinstance(b, Figure)]
    return {"markdown": out_dir / "compare.md", "html": out_dir / "report.html", "json": out_dir / "compare.json",
            **{p.stem: p for p in figures}}
