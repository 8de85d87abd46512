"""Render a report in a real headless Chromium and read back what the browser made of it.

`render(page)` copies the page with a small probe script appended (the report itself has none),
loads it with the network blocked (every host resolves to nothing) and returns the DOM after load:
each <img> carries the browser's `naturalWidth`, each marked table cell its computed alignment and
background, and `#probe-text` holds the page's rendered text (`innerText`).
`screenshot(page, png)` takes a picture of the original page.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import pytest

NAMES = ("chromium", "chromium-browser", "google-chrome")

PROBE = """<script>
window.addEventListener("load", () => {
  for (const img of document.images) { img.dataset.naturalWidth = img.naturalWidth; }
  for (const td of document.querySelectorAll("td.num, td.bad, td.good")) {
    const style = getComputedStyle(td);
    td.dataset.align = style.textAlign; td.dataset.background = style.backgroundColor;
  }
  const text = document.createElement("pre");
  text.id = "probe-text"; text.textContent = document.body.innerText;
  document.body.dataset.title = document.title;
  document.body.appendChild(text);
});
</script>"""


def chromium() -> str:
    """The browser; skipped when absent outside CI (in CI `make system-deps` installs it, so absence fails)."""
    for name in NAMES:
        found = shutil.which(name)
        if found:
            return found
    if os.environ.get("CI"):
        pytest.fail("chromium is not installed; `make system-deps` installs it")
    pytest.skip("chromium is not installed (make system-deps)")


def _chromium(args: list[str], work: Path) -> subprocess.CompletedProcess:
    command = [
        chromium(), "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run", "--disable-extensions",
        f"--user-data-dir={work / 'chromium-profile'}", "--host-resolver-rules=MAP * ~NOTFOUND", *args,
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    return result


@dataclass
class Element:
    tag: str
    attrs: dict[str, str]


class Dom(HTMLParser):
    """Every element (tag, attributes) in document order, and the probe's rendered text."""

    def __init__(self) -> None:
        super().__init__()
        self.elements: list[Element] = []
        self.text = ""
        self._in_probe = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, {k: v or "" for k, v in attrs})
        self.elements.append(element)
        self._in_probe = element.attrs.get("id") == "probe-text"

    def handle_endtag(self, tag: str) -> None:
        if tag == "pre":
            self._in_probe = False

    def handle_data(self, data: str) -> None:
        if self._in_probe:
            self.text += data

    def find(self, tag: str, **attrs: str) -> list[Element]:
        return [e for e in self.elements if e.tag == tag and all(e.attrs.get(k) == v for k, v in attrs.items())]

    def with_class(self, tag: str, name: str) -> list[Element]:
        return [e for e in self.elements if e.tag == tag and name in e.attrs.get("class", "").split()]


def render(page: Path, work: Path) -> Dom:
    """The DOM Chromium built from `page` (probed copy written next to it, so relative paths resolve)."""
    probed = page.with_name(f".probe-{page.name}")
    probed.write_text(page.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8")
    result = _chromium(["--virtual-time-budget=10000", "--dump-dom", probed.resolve().as_uri()], work)
    probed.unlink()
    dom = Dom()
    dom.feed(result.stdout)
    return dom


def screenshot(page: Path, png: Path, work: Path, width: int = 1280, height: int = 3000) -> Path:
    _chromium(["--hide-scrollbars", f"--window-size={width},{height}", "--virtual-time-budget=10000",
               f"--screenshot={png}", page.resolve().as_uri()], work)
    return png
