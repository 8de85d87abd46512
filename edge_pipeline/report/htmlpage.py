"""The one HTML page builder (run report and `compare`): a header with the facts of the run and the
recipe (collapsible), a table of contents, one <section> per `doc.Section`, styled tables and each
plot right beside or under the table it explains.

The page is a single file that works offline: inline CSS, no scripts, plots embedded as base64 PNG
data URIs (`data-file` keeps the plot's path next to the report). Every text that comes from a file
(stage names, layer names, reasons, the recipe) is escaped.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .doc import Block, Bullets, Cell, Figure, Section, Table

_BOLD = re.compile(r"\*\*(.+?)\*\*")
PROSE_CHARS = 40  # a longer cell (a reason, a fix) may wrap; figures and names stay on one line

CSS = """
:root { --fg: #1f2933; --muted: #616e7c; --line: #d9e2ec; --zebra: #f5f7fa; --head: #e4e7eb;
        --bad: #fde8e8; --bad-fg: #9b1c1c; --good: #e3f9e5; --good-fg: #05603a; --accent: #2a6f97; }
* { box-sizing: border-box; }
body { font: 14px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       color: var(--fg); max-width: 1280px; margin: 0 auto; padding: 24px 32px 48px; }
a { color: var(--accent); text-decoration: none; } a:hover { text-decoration: underline; }
header { border-bottom: 2px solid var(--line); padding-bottom: 12px; }
h1 { font-size: 26px; margin: 0 0 8px; }
h2 { font-size: 20px; margin: 0 0 12px; padding-bottom: 4px; border-bottom: 1px solid var(--line); }
dl.facts { display: flex; flex-wrap: wrap; gap: 4px 28px; margin: 0 0 8px; }
dl.facts div { display: flex; gap: 6px; } dl.facts dt { color: var(--muted); } dl.facts dd { margin: 0; font-weight: 600; }
details { margin: 8px 0 0; } summary { cursor: pointer; color: var(--accent); }
pre { background: var(--zebra); border: 1px solid var(--line); border-radius: 4px; padding: 12px;
      overflow: auto; max-height: 480px; font-size: 12px; }
nav.toc { margin: 16px 0 8px; } nav.toc ol { margin: 4px 0; padding-left: 22px; columns: 2; max-width: 640px; }
nav.toc .label { color: var(--muted); font-weight: 600; }
section { margin: 32px 0 0; }
.back { float: right; font-size: 12px; font-weight: normal; }
.scroll { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; margin: 4px 0 12px; font-variant-numeric: tabular-nums; font-size: 13px; }
th, td { padding: 4px 10px; border-bottom: 1px solid var(--line); text-align: left; vertical-align: top; white-space: nowrap; }
td.prose { white-space: normal; min-width: 18em; }
thead th { background: var(--head); border-bottom: 2px solid #cbd2d9; white-space: nowrap; }
tbody tr:nth-child(even) { background: var(--zebra); }
tbody tr:hover { background: #e6f0f7; }
th.num, td.num { text-align: right; white-space: nowrap; }
td.bad { background: var(--bad); color: var(--bad-fg); font-weight: 600; }
td.good { background: var(--good); color: var(--good-fg); font-weight: 600; }
.pair { display: flex; flex-wrap: wrap; gap: 8px 24px; align-items: flex-start; }
figure { margin: 4px 0 16px; } figure img { max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 4px; }
figcaption { color: var(--muted); font-size: 12px; }
ul { padding-left: 20px; } li { margin: 2px 0; }
footer { margin-top: 40px; color: var(--muted); font-size: 12px; border-top: 1px solid var(--line); padding-top: 8px; }
@media print { nav.toc, .back { display: none; } section { break-inside: avoid-page; } }
"""


@dataclass
class PageHeader:
    facts: list[tuple[str, str]] = field(default_factory=list)  # (label, value) shown under the title
    source_name: str | None = None  # e.g. "recipe.resolved.yaml", shown collapsible
    source_text: str | None = None


def _text(value: str) -> str:
    """Escaped text with `**bold**` as <strong> (escaping first, so file content cannot inject markup)."""
    return _BOLD.sub(r"<strong>\1</strong>", html.escape(value, quote=True))


def _table(table: Table) -> str:
    numeric = table.numeric_columns()

    def cls(index: int, cell: Cell | None = None) -> str:
        names = ["num"] if index in numeric else []
        if cell is not None:
            names += (["prose"] if len(cell.text) > PROSE_CHARS else []) + ([cell.flag] if cell.flag else [])
        return f' class="{" ".join(names)}"' if names else ""

    head = "".join(f"<th{cls(i)}>{html.escape(h)}</th>" for i, h in enumerate(table.headers))
    body = "".join(
        "<tr>" + "".join(f"<td{cls(i, c)}>{html.escape(c.text)}</td>" for i, c in enumerate(row)) + "</tr>"
        for row in table.rows
    )
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _figure(figure: Figure, base: Path) -> str:
    path = base / figure.path
    caption = html.escape(figure.caption.replace("_", " "))
    if not path.is_file():
        return f'<p class="missing">plot {html.escape(figure.path)} is missing</p>'
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(figure.caption)}" '
            f'data-file="{html.escape(figure.path)}"><figcaption>{caption} ({html.escape(figure.path)})</figcaption></figure>')


def _block(block: Block, base: Path) -> str:
    if isinstance(block, Table):
        return _table(block)
    if isinstance(block, Figure):
        return _figure(block, base)
    if isinstance(block, Bullets):
        return "<ul>" + "".join(f"<li>{_text(item)}</li>" for item in block.items) + "</ul>"
    return f"<p>{_text(block.text)}</p>"


def _blocks(blocks: list[Block], base: Path) -> str:
    """Blocks in order; a table and the figures right after it share a row when the page is wide enough."""
    out, i = [], 0
    while i < len(blocks):
        figures = 0
        while isinstance(blocks[i], Table) and i + 1 + figures < len(blocks) and isinstance(blocks[i + 1 + figures], Figure):
            figures += 1
        group = blocks[i:i + 1 + figures]
        inner = "".join(_block(b, base) for b in group)
        out.append(f'<div class="pair">{inner}</div>' if figures else inner)
        i += len(group)
    return "".join(out)


def _header(title: str, header: PageHeader) -> str:
    facts = "".join(f"<div><dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd></div>" for k, v in header.facts)
    parts = [f"<h1>{html.escape(title)}</h1>", f'<dl class="facts">{facts}</dl>' if facts else ""]
    if header.source_text is not None:
        parts.append(f"<details><summary>{html.escape(header.source_name or 'source')}</summary>"
                     f"<pre>{html.escape(header.source_text)}</pre></details>")
    return "<header>" + "".join(parts) + "</header>"


def _toc(sections: Iterable[Section]) -> str:
    items = "".join(f'<li><a href="#{html.escape(s.key)}">{html.escape(s.title)}</a></li>' for s in sections)
    return f'<nav class="toc" id="contents"><span class="label">Contents</span><ol>{items}</ol></nav>'


def html_page(title: str, sections: list[Section], base: Path, header: PageHeader | None = None) -> str:
    """The whole page; figure paths are read relative to `base` (the folder the page is written to)."""
    body = "".join(
        f'<section id="{html.escape(s.key)}"><h2>{html.escape(s.title)}</h2>{_blocks(s.blocks, base)}'
        '<a class="back" href="#contents">back to contents</a></section>'
        for s in sections
    )
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>"
        f"{_header(title, header or PageHeader())}{_toc(sections)}<main>{body}</main>"
        "<footer>Written by edge-pipeline. Plots are embedded; the page needs no network.</footer>"
        "</body></html>\n"
    )
