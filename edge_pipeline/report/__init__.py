"""Reports: one record model (`records`), one number format (`fmt`), sections of blocks (`doc`)
rendered to the terminal, report.md and a self-contained report.html; `compare` across runs."""

# Importing a section module registers it; `sections.SECTION_ORDER` alone decides the order.
from . import devices_section, early_exit_section, int8_methods_section, pruning_section, quantization_section, restructure_section, table  # noqa: F401
from .doc import Section
from .records import ModelRecord, stage_records
from .render import print_devices, print_table, write_reports
from .sections import SECTION_ORDER, build_sections, register_section

__all__ = ["SECTION_ORDER", "ModelRecord", "Section", "build_sections", "print_devices", "print_table", "register_section",
           "stage_records", "write_reports"]
