"""report.html of a run with every section (hand-made run folder, see `fabricated`), read as HTML and
rendered in a real headless Chromium: header, contents, styled tables, plots next to their tables,
offline, and text from files shown as text."""

from __future__ import annotations

import html
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edge_pipeline.report import SECTION_ORDER, write_reports
from edge_pipeline.rundir import RunDir
from tests.report.browser import render, screenshot
from tests.report.fabricated import EVIL, EVIL_LAYER, fabricated_run

TITLE = "tiny: stage by stage"


@pytest.fixture
def report(tmp_path) -> RunDir:
    run = RunDir(fabricated_run(tmp_path / "run"))
    write_reports(run, run.read_metrics(), TITLE)
    return run


def test_every_section_once_in_order_with_contents_links(report):
    page = report.report_html.read_text()
    ids = re.findall(r'<section id="([^"]+)">', page)
    # the fabricated run has something for every section but early exits (tests/report/test_early_exit_report.py)
    assert ids == [s for s in SECTION_ORDER if s != "early_exit"]
    links = re.findall(r'<nav class="toc".*?</nav>', page)[0]
    assert re.findall(r'href="#([^"]+)"', links) == ids
    md = report.report_md.read_text()
    titles = re.findall(r"^## (.+)$", md, flags=re.M)
    assert titles == re.findall(r'<section id="[^"]+"><h2>([^<]+)</h2>', page)


def test_header_has_recipe_date_versions_and_the_recipe(report):
    page = report.report_html.read_text()
    header = page[page.index("<header>"):page.index("</header>")]
    assert f"<h1>{TITLE}</h1>" in header
    assert "<dt>recipe</dt><dd>tiny</dd>" in header
    assert re.search(r"<dt>finished</dt><dd>\d{4}-\d\d-\d\d \d\d:\d\d</dd>", header)
    assert "torch 2.14.1" in header and "edge-pipeline 0.1.0+abc" in header and "digits, 10 classes" in header
    assert "<details><summary>recipe.resolved.yaml</summary><pre>name: tiny" in header


def test_text_from_files_is_escaped(report):
    page = report.report_html.read_text()
    assert "<script" not in page and "<b>9</b>" not in page
    assert html.escape(EVIL) in page and html.escape(EVIL_LAYER) in page


def _cells_marked(page: str, flag: str) -> list[str]:
    return [html.unescape(text) for classes, text in re.findall(r'<td class="([^"]*)">([^<]*)</td>', page)
            if flag in classes.split()]


def test_self_contained_page_with_marked_cells(report):
    page = report.report_html.read_text()
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", page)
    images = re.findall(r'<img src="data:image/png;base64,[A-Za-z0-9+/=]+" alt="[^"]*" data-file="([^"]+)"', page)
    assert images == ["plots/stages.png", "plots/latency_by_device.png", "plots/accuracy_vs_latency.png"]
    assert all((report.root / rel).is_file() for rel in images)
    # each plot right after the table it explains, in one flex row
    assert re.search(r'<div class="pair"><div class="scroll"><table>.*?</table></div><figure><img[^>]+data-file="plots/stages.png"',
                     page)
    bad, good = _cells_marked(page, "bad"), _cells_marked(page, "good")
    assert any(b.startswith("FAIL: accuracy drop") for b in bad)  # the failed gate
    assert "incompatible" in bad and any(b.startswith("no: noisy run") for b in bad)
    assert good.count("fastest") == 2 and "0.009" in good


def test_plots_off_writes_no_figures(tmp_path):
    run = RunDir(fabricated_run(tmp_path / "run"))
    write_reports(run, run.read_metrics(), TITLE, plots=False)
    assert "<img" not in run.report_html.read_text() and not run.plots_dir.exists()


def _pixels(png: Path) -> np.ndarray:
    with Image.open(png) as image:
        return np.asarray(image.convert("RGB"))


@pytest.mark.slow  # two Chromium starts: ~6 s on an idle machine, over 30 s on a busy one
def test_chromium_renders_the_report(report, tmp_path):
    dom = render(report.report_html, tmp_path)
    assert dom.find("body")[0].attrs["data-title"] == TITLE  # no script from a file ran
    assert len(dom.find("script")) == 1  # only the probe
    # the rendered text: no markdown left over, the file's markup shown as text
    assert "**" not in dom.text and "prune (l1, ratio removed 0.5" in dom.text
    assert EVIL in dom.text
    # models, stages, restructure, pruned layers, int8 methods, fidelity, diagnosis, compatibility, devices
    assert len(dom.find("table")) == 9 and len(dom.find("section")) == len([s for s in SECTION_ORDER if s != "early_exit"])
    # every plot decoded by the browser at its real size (the network is blocked, so nothing else could load)
    images = dom.find("img")
    assert len(images) == 3
    for img in images:
        with Image.open(report.root / img.attrs["data-file"]) as png:
            assert int(img.attrs["data-natural-width"]) == png.width > 300
    # styles applied: numbers right-aligned, invalid cells tinted
    numbers = dom.with_class("td", "num")
    assert numbers and {td.attrs["data-align"] for td in numbers} == {"right"}
    assert {td.attrs["data-background"] for td in dom.with_class("td", "bad")} == {"rgb(253, 232, 232)"}
    ids = {e.attrs["id"] for e in dom.elements if "id" in e.attrs}
    assert all(a.attrs["href"][1:] in ids for a in dom.find("a") if a.attrs.get("href", "").startswith("#"))

    shot = _pixels(screenshot(report.report_html, tmp_path / "report.png", tmp_path))
    height, width, _ = shot.shape
    assert (width, height) == (1280, 3000)
    white = (shot == 255).all(axis=-1).mean()
    assert 0.3 < white < 0.98  # a page, not a blank or a solid block
    assert len(np.unique(shot.reshape(-1, 3), axis=0)) > 200  # text, tables, zebra rows, plots
    zebra = np.array([0xF5, 0xF7, 0xFA])
    assert (np.abs(shot.astype(int) - zebra).sum(axis=-1) == 0).sum() > 10_000
