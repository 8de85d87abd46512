"""Run report section: the device x model table of `compare` and its plots, for a run whose recipe
has a `profile` stage (e.g. `profile: {devices: [host, qemu-aarch64]}`)."""

from __future__ import annotations

from .compare import device_blocks, mark_best, unique_labels
from .doc import Section
from .sections import ReportContext, register_section


@register_section("devices")
def devices_section(ctx: ReportContext) -> Section | None:
    records = ctx.profile_records
    if not records:
        return None
    unique_labels(records)
    mark_best(records)
    plots_dir = ctx.run.plots_dir if ctx.plots else None
    return Section("devices", "Devices", device_blocks(records, plots_dir, ctx.run.root))
