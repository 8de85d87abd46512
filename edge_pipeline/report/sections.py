"""Report sections beyond the stage table, registered by topic.

A section builder takes (run_dir, metrics) and returns a `Section` or None (nothing to say for this
run). Builders live next to their topic (e.g. a restructure section reads the restructure stage's
details.json) and register here; `render` places them after the table in registration order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..registry import Registry


@dataclass
class Section:
    title: str
    markdown: str  # body in markdown (tables, lists)
    images: list[str] = field(default_factory=list)  # PNG paths relative to the run dir


SectionBuilder = Callable[[Path, dict[str, Any]], "Section | None"]
SECTIONS: Registry[SectionBuilder] = Registry("report section")
_ORDER: list[str] = []


def register_section(name: str):
    def wrap(builder: SectionBuilder) -> SectionBuilder:
        SECTIONS.register(name, builder)
        _ORDER.append(name)
        return builder

    return wrap


def build_sections(run_dir: Path, metrics: dict[str, Any]) -> list[Section]:
    out = []
    for name in _ORDER:
        section = SECTIONS.get(name)(run_dir, metrics)
        if section is not None:
            out.append(section)
    return out


def details_of(run_dir: Path, metrics: dict[str, Any], stage_type: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(metrics entry, details.json) for every stage of a type, in order."""
    import json

    out = []
    for index, entry in enumerate(metrics["stages"]):
        if entry["type"] != stage_type:
            continue
        path = run_dir / f"{index + 1:02d}-{entry['name']}" / "details.json"
        out.append((entry, json.loads(path.read_text()) if path.is_file() else {}))
    return out
