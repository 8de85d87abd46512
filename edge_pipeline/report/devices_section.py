"""Run report section: the device x model table of `compare` and its plots, for a run whose recipe
has a `profile` stage (e.g. `profile: {devices: [host, qemu-aarch64]}`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .sections import Section, register_section


@register_section("devices")
def devices_section(run_dir: Path, metrics: dict[str, Any]) -> Section | None:
    from .compare import _artifact_facts, _unique_labels, entry_from_profile, mark_best, markdown_table, write_plots
    import json

    facts = _artifact_facts(run_dir, metrics)
    entries = []
    for stage in metrics.get("stages", []):
        for rel in stage.get("profiles", []):
            path = run_dir / rel
            if path.is_file():
                entries.append(entry_from_profile(json.loads(path.read_text()), path, None, facts))
    if not entries:
        return None
    _unique_labels(entries)
    mark_best(entries)
    plots = write_plots(entries, run_dir / "plots")
    return Section(
        title="Devices",
        markdown=markdown_table(entries),
        images=[p.relative_to(run_dir).as_posix() for p in plots],
    )
