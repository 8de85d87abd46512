"""Render the stage table to the terminal, report.md and report.html."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from ..artifacts import atomic_write_text
from .sections import Section, build_sections
from .table import HEADERS, Row, build_rows, cells


def print_table(rows: list[Row], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, header_style="bold")
    for header in HEADERS:
        table.add_column(header, justify="right" if header not in ("stage", "model", "status", "device", "notes") else "left")
    for row in rows:
        table.add_row(*cells(row))
    Console(width=200).print(table)


def markdown(rows: list[Row], title: str, metrics: dict[str, Any], sections: list[Section]) -> str:
    lines = [f"# {title}", "", f"edge-pipeline {metrics['version']}; accuracy is top-1 on the held-out test split (%).", ""]
    lines.append("| " + " | ".join(HEADERS) + " |")
    lines.append("|" + "|".join("---" for _ in HEADERS) + "|")
    for row in rows:
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells(row)) + " |")
    lines += ["", "## Stages", ""]
    for entry in metrics["stages"]:
        lines.append(f"- **{entry['name']}** ({entry['type']}): {entry['status']} in {entry['seconds']:.1f}s")
    for section in sections:
        lines += ["", f"## {section.title}", "", section.markdown.rstrip()]
        lines += [f"![{Path(img).stem}]({img})" for img in section.images]
    return "\n".join(lines) + "\n"


def _markdown_to_html(text: str) -> str:
    """Just enough markdown for section bodies: pipe tables, bullet lists, paragraphs."""
    out, table, items = [], [], []

    def flush() -> None:
        if table:
            head, *body = [r for r in table if not set(r.replace("|", "").strip()) <= set("-: ")]
            cells_of = lambda r: [c.strip() for c in r.strip().strip("|").split("|")]
            out.append("<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in cells_of(head)) + "</tr>"
                       + "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells_of(r)) + "</tr>" for r in body)
                       + "</table>")
            table.clear()
        if items:
            out.append("<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in items) + "</ul>")
            items.clear()

    for line in text.splitlines():
        if line.startswith("|"):
            table.append(line)
        elif line.startswith(("- ", "* ")):
            items.append(line[2:])
        else:
            flush()
            if line.strip():
                out.append(f"<p>{html.escape(line)}</p>")
    flush()
    return "".join(out)


def html_page(rows: list[Row], title: str, sections: list[Section]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in HEADERS)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells(r)) + "</tr>" for r in rows)
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>body{{font-family:sans-serif}}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
        "td:first-child,td:nth-child(2){text-align:left}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><table><tr>{head}</tr>{body}</table>"
        + "".join(
            f"<h2>{html.escape(s.title)}</h2>{_markdown_to_html(s.markdown)}"
            + "".join(f"<img src='{html.escape(img)}' alt='{html.escape(Path(img).stem)}'>" for img in s.images)
            for s in sections
        )
        + "</body></html>\n"
    )


def write_reports(run_dir: Path, metrics: dict[str, Any], title: str) -> list[Row]:
    rows = build_rows(run_dir, metrics)
    sections = build_sections(run_dir, metrics)
    atomic_write_text(run_dir / "report.md", markdown(rows, title, metrics, sections))
    atomic_write_text(run_dir / "report.html", html_page(rows, title, sections))
    return rows
