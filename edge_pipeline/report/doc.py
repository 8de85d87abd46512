"""The report as data: sections of blocks (paragraphs, bullet lists, tables, figures).

Section builders return these; `blocks_markdown` writes them as markdown (report.md, compare.md)
and `htmlpage` as HTML, so no renderer has to parse another's output. Text is plain text from
files (escaped by the HTML renderer) plus one inline markup: `**bold**`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

GOOD, BAD = "good", "bad"

# A cell that holds figures: "12.5", "+0.37", "99.63%", "19.3 KB", "27.06k -> 11.91k (0.44x)", "1.0 / 2.0".
_FIGURE = r"[+-]?x?\d[\d,]*(?:\.\d+)?(?:e[+-]?\d+)?(?: ?(?:%|B|KB|MB|GB|k|M|G|x|ms|s))?"
_NUMERIC = re.compile(rf"^{_FIGURE}(?:(?: / | -> ){_FIGURE})*(?: \({_FIGURE}\))?$")
_DASH = "-"


@dataclass(frozen=True)
class Cell:
    text: str
    flag: str | None = None  # GOOD (best of its kind) or BAD (invalid, failed): marked in HTML and the terminal


@dataclass(init=False)
class Table:
    headers: list[str]
    rows: list[list[Cell]]

    def __init__(self, headers: Iterable[str], rows: Iterable[Iterable[str | Cell]] = ()) -> None:
        self.headers = list(headers)
        self.rows = [[c if isinstance(c, Cell) else Cell(c) for c in row] for row in rows]

    def numeric_columns(self) -> set[int]:
        """Columns whose known cells are all figures (right-aligned when shown)."""
        out = set()
        for index in range(len(self.headers)):
            texts = [row[index].text for row in self.rows if index < len(row) and row[index].text not in (_DASH, "")]
            if texts and all(_NUMERIC.match(t) for t in texts):
                out.add(index)
        return out


@dataclass
class Paragraph:
    text: str


@dataclass
class Bullets:
    items: list[str]


@dataclass
class Figure:
    path: str  # PNG, relative to the folder the report is written to
    caption: str


Block = Paragraph | Bullets | Table | Figure


@dataclass
class Section:
    key: str  # anchor in the HTML page; also the section's name in `sections.SECTION_ORDER`
    title: str
    blocks: list[Block] = field(default_factory=list)

    @property
    def markdown(self) -> str:
        return blocks_markdown(self.blocks)


def table_markdown(table: Table) -> list[str]:
    lines = ["| " + " | ".join(table.headers) + " |", "|" + "|".join("---" for _ in table.headers) + "|"]
    lines += ["| " + " | ".join(c.text.replace("|", "/") for c in row) + " |" for row in table.rows]
    return lines


def _block_markdown(block: Block) -> list[str]:
    if isinstance(block, Table):
        return table_markdown(block)
    if isinstance(block, Bullets):
        return [f"- {item}" for item in block.items]
    if isinstance(block, Figure):
        return [f"![{block.caption}]({block.path})"]
    return [block.text]


def blocks_markdown(blocks: Iterable[Block]) -> str:
    return "\n\n".join("\n".join(_block_markdown(b)) for b in blocks)


def document_markdown(title: str, intro: str, sections: Iterable[Section]) -> str:
    parts = [f"# {title}", intro]
    for section in sections:
        parts += [f"## {section.title}", section.markdown]
    return "\n\n".join(p for p in parts if p) + "\n"
