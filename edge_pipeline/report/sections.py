"""Report sections, registered by topic, shown in `SECTION_ORDER` (the one list of them).

A builder takes a `ReportContext` (the run folder, its metrics, whether to draw plots) and returns
a `doc.Section` or None (nothing to say for this run). Builders live next to their topic (e.g. the
restructure section reads the restructure stage's details.json).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from ..registry import Registry
from ..rundir import RunDir
from .doc import Figure, Section
from .records import ModelRecord, profile_records, stage_records

# Pipeline order: the stage tables first, then one section per topic in the order stages run.
SECTION_ORDER = ("models", "stages", "restructure", "pruning", "early_exit", "int8_methods", "quantization", "devices")


@dataclass
class ReportContext:
    run: RunDir
    metrics: dict[str, Any]
    plots: bool = True

    @cached_property
    def stage_records(self) -> list[ModelRecord]:
        return stage_records(self.run, self.metrics)

    @cached_property
    def profile_records(self) -> list[ModelRecord]:
        return profile_records(self.run, self.metrics)

    def details_of(self, stage_type: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        return self.run.details_of(self.metrics, stage_type)

    def plot_path(self, name: str) -> Path:
        return self.run.plots_dir / name

    def figure(self, path: Path | None, caption: str) -> list[Figure]:
        """A drawn plot as a figure block (none when the plot had nothing to show)."""
        return [] if path is None else [Figure(path.relative_to(self.run.root).as_posix(), caption)]


SectionBuilder = Callable[[ReportContext], "Section | None"]
SECTIONS: Registry[SectionBuilder] = Registry("report section")


def register_section(name: str) -> Callable[[SectionBuilder], SectionBuilder]:
    if name not in SECTION_ORDER:
        raise ValueError(f"report section {name!r} is not in SECTION_ORDER; add it there, in pipeline order")

    def wrap(builder: SectionBuilder) -> SectionBuilder:
        return SECTIONS.register(name, builder)

    return wrap


def as_rundir(run: RunDir | str | os.PathLike) -> RunDir:
    return run if isinstance(run, RunDir) else RunDir(run)


def sections_of(ctx: ReportContext) -> list[Section]:
    out = []
    for name in SECTION_ORDER:
        section = SECTIONS.get(name)(ctx)
        if section is not None:
            out.append(section)
    return out


def build_sections(run: RunDir | str | os.PathLike, metrics: dict[str, Any], plots: bool = True) -> list[Section]:
    return sections_of(ReportContext(as_rundir(run), metrics, plots))
