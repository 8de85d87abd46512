"""Run report section: the file to ship per device, the device x model table of `compare`, each
shipped file against the trained baseline, and the plots, for a run whose recipe has a `profile`
stage (e.g. `profile: {devices: [host, qemu-aarch64]}`)."""

from __future__ import annotations

from .compare import device_blocks, mark_best, unique_labels
from .doc import Section
from .sections import ReportContext, register_section
from .shipping import baseline_notes, run_recommendations


@register_section("devices")
def devices_section(ctx: ReportContext) -> Section | None:
    records = ctx.profile_records
    if not records:
        return None
    unique_labels(records)
    mark_best(records)
    plots_dir = ctx.run.plots_dir if ctx.plots else None
    recommendations = [(None, rec) for rec in run_recommendations(ctx.run, ctx.metrics, records)]
    blocks = device_blocks(records, plots_dir, ctx.run.root, recommendations, baseline_notes(ctx.metrics))
    return Section("devices", "Devices", blocks)
