"""Reports: the stage-by-stage table (terminal, markdown, HTML)."""

from .table import Row, build_rows
from .render import print_table, write_reports

__all__ = ["Row", "build_rows", "print_table", "write_reports"]
