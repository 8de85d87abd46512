"""Write a run's report.md and report.html, and print its stage table to the terminal."""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any

from ..artifacts import atomic_write_text
from ..rundir import RESOLVED_RECIPE, RunDir
from .compare import print_gains, print_ship_lines
from .doc import document_markdown
from .htmlpage import PageHeader, html_page
from .records import ModelRecord, profile_records, run_name
from .sections import ReportContext, as_rundir, sections_of
from .shipping import baseline_notes, run_recommendations
from .table import stage_table
from .terminal import print_rich


def print_table(records: list[ModelRecord], title: str) -> None:
    print_rich(stage_table(records), title)


def print_devices(run_dir: RunDir | str | os.PathLike, metrics: dict[str, Any]) -> None:
    """After a run's stage table: each shipped file against the baseline, and the file to ship per device."""
    run = as_rundir(run_dir)
    records = profile_records(run, metrics)
    if not records:
        return
    print_gains(records, baseline_notes(metrics))
    print_ship_lines([(None, rec) for rec in run_recommendations(run, metrics, records)], records)


def _finished(run: RunDir) -> str:
    """When metrics.json was last written (the run's end); now for a report of unsaved metrics."""
    path = run.metrics_path
    moment = datetime.fromtimestamp(path.stat().st_mtime) if path.is_file() else datetime.now()
    return moment.strftime("%Y-%m-%d %H:%M")


def run_header(run: RunDir, metrics: dict[str, Any]) -> PageHeader:
    versions = run.read_manifest().get("versions") or {"edge-pipeline": metrics.get("version", "?")}
    facts = [("recipe", run_name(run, metrics)), ("finished", _finished(run)), ("stages", str(len(metrics["stages"])))]
    data = metrics.get("data")
    if isinstance(data, dict) and data.get("dataset"):
        facts.append(("data", f"{data['dataset']}" + (f", {data['classes']} classes" if data.get("classes") else "")))
    facts.append(("versions", ", ".join(f"{name} {version}" for name, version in versions.items())))
    return PageHeader(facts, RESOLVED_RECIPE, run.read_resolved_recipe())


def write_reports(run_dir: RunDir | str | os.PathLike, metrics: dict[str, Any], title: str,
                  plots: bool = True) -> list[ModelRecord]:
    """report.md and report.html (plots under plots/ unless `plots` is off); returns the stage table's records."""
    run = as_rundir(run_dir)
    ctx = ReportContext(run, metrics, plots)
    sections = sections_of(ctx)
    intro = f"edge-pipeline {metrics.get('version', '?')}; accuracy is top-1 on the held-out test split."
    atomic_write_text(run.report_md, document_markdown(title, intro, sections))
    atomic_write_text(run.report_html, html_page(title, sections, run.root, run_header(run, metrics)))
    return ctx.stage_records
