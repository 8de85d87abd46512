"""Compare device profiles side by side: device x model table, fastest/smallest per device, plots.

Input paths are profile JSON files (`profiles/<device>__<model>.json`), folders of them, or run
folders (their `metrics.json` names the profiles and gives each TFLite file's stage, precision and
accuracy). A profile file inside a run's profiles folder picks up the same facts from that run.
The run report's Devices section shows the same table (`device_blocks`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict
from datetime import datetime
from pathlib import Path

from ..artifacts import atomic_write_json, atomic_write_text
from ..errors import UserError
from ..rundir import PLOTS_DIR, RunDir
from . import fmt
from .doc import BAD, GOOD, Block, Bullets, Cell, Figure, Section, Table, blocks_markdown
from .htmlpage import PageHeader, html_page
from .plots import accuracy_vs_latency_plot, latency_plot
from .records import FASTEST, SMALLEST, ModelRecord, build_record, facts_by_file, profile_records, read_profile, run_name
from .terminal import print_rich

__all__ = ["FASTEST", "SMALLEST", "load_records", "mark_best", "print_compare", "write_compare"]

HEADERS = ["device", "model", "median ms", "p90 ms", "std ms", "peak MB", "size", "accuracy", "valid", "best"]
EMULATED_NOTE = ("Emulated devices (qemu user mode): latency is only comparable between models on the same emulator, "
                 "never as device time.")
UNITS_NOTE = "Latency is per inference, batch 1; accuracy is top-1 on the run's held-out test split, where known."


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
    """Per device: the fastest valid model (lowest median) and the smallest file."""
    by_device: dict[str | None, list[ModelRecord]] = {}
    for r in records:
        r.marks = []
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


def print_compare(records: list[ModelRecord], title: str = "devices x models") -> None:
    print_rich(compare_table(records), title)


def device_blocks(records: list[ModelRecord], plots_dir: Path | None, base: Path) -> list[Block]:
    """The device x model table, its notes and (when `plots_dir` is given) its plots, paths relative to `base`."""
    notes = ([EMULATED_NOTE] if any(r.emulated for r in records) else []) + [UNITS_NOTE]
    blocks: list[Block] = [Bullets(notes), compare_table(records)]
    if plots_dir is not None:
        latency = latency_plot(records, plots_dir / "latency_by_device.png")
        blocks.append(Figure(latency.relative_to(base).as_posix(), "latency_by_device"))
        accuracy = accuracy_vs_latency_plot(records, plots_dir / "accuracy_vs_latency.png")
        if accuracy is not None:
            blocks.append(Figure(accuracy.relative_to(base).as_posix(), "accuracy_vs_latency"))
    return blocks


def write_compare(records: list[ModelRecord], out_dir: Path, title: str = "Device comparison") -> dict[str, Path]:
    """compare.md, report.html (plots embedded), compare.json and plots/*.png in `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    blocks = device_blocks(records, out_dir / PLOTS_DIR, out_dir)
    section = Section("devices", "Devices x models", blocks)
    atomic_write_text(out_dir / "compare.md", f"# {title}\n\n{blocks_markdown(blocks)}\n")
    runs = sorted({r.run for r in records if r.run})
    header = PageHeader(facts=[("written", datetime.now().strftime("%Y-%m-%d %H:%M")),
                               ("runs", ", ".join(runs) or "-"), ("profiles", str(len(records)))])
    atomic_write_text(out_dir / "report.html", html_page(title, [section], out_dir, header))
    atomic_write_json(out_dir / "compare.json", {"entries": [asdict(r) for r in sorted_records(records)]})
    figures = [out_dir / b.path for b in blocks if isinstance(b, Figure)]
    return {"markdown": out_dir / "compare.md", "html": out_dir / "report.html", "json": out_dir / "compare.json",
            **{p.stem: p for p in figures}}
