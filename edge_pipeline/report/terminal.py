"""Any report table in the terminal (rich), numbers right-aligned, best and invalid cells coloured."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table as RichTable
from rich.text import Text

from .doc import BAD, GOOD, Table

STYLES = {GOOD: "bold green", BAD: "bold red"}


def print_rich(table: Table, title: str) -> None:
    numeric = table.numeric_columns()
    shown = RichTable(title=title, header_style="bold")
    for index, header in enumerate(table.headers):
        shown.add_column(header, justify="right" if index in numeric else "left")
    for row in table.rows:
        # Text, not markup strings: a stage or layer name from a file may contain "[...]".
        shown.add_row(*(Text(c.text, style=STYLES.get(c.flag or "", "")) for c in row))
    Console(width=200).print(shown)
