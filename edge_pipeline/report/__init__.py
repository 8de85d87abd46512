"""Reports: the stage-by-stage table (terminal, markdown, HTML) and topic sections."""

from .render import print_table, write_reports
from .sections import Section, register_section
from .table import Row, build_rows
# Sections appear in registration order: the pipeline's order.
from . import restructure_section  # noqa: F401  (registers the "restructure" section)
from . import pruning_section  # noqa: F401  (registers the "pruning" section)
from . import quantization_section  # noqa: F401  (registers the "quantization" section)
from . import devices_section  # noqa: F401  (registers the "devices" section)

__all__ = ["Row", "Section", "build_rows", "print_table", "register_section", "write_reports"]
