"""The report of a real run (every stage type on 16 px digits, profiled on this host), written by
`edge-pipeline run` and rendered in a real headless Chromium."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from edge_pipeline.cli import main
from edge_pipeline.report import SECTION_ORDER, fmt
from tests.conftest import TINY_HEAD, TINY_TORCH_STAGES, write
from tests.report.browser import chromium, render, screenshot

DEPLOY_STAGES = """\
  - quantize: {mode: int8, calibration_samples: 64, equalize: true, bias_correction: empirical}
  - export: {format: tflite}
  - profile: {devices: [DEVICE]}
"""


@pytest.mark.e2e
@pytest.mark.slow  # a real run with an onnx2tf conversion (~1-3 min), then two Chromium starts
def test_real_run_report_renders_every_section(tmp_path, fast_device, capsys):
    chromium()  # skip early (outside CI) rather than after the run
    stages = TINY_TORCH_STAGES + DEPLOY_STAGES.replace("DEVICE", str(fast_device))
    out = tmp_path / "run"
    assert main(["run", str(write(tmp_path / "tiny.yaml", TINY_HEAD + stages)), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "tflite int8" in printed and "fast-host" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    int8 = next(a for s in metrics["stages"] for a in s.get("artifacts", []) if a["precision"] == "int8")

    dom = render(out / "report.html", tmp_path)
    # every section but early exits, which tests/stages/test_early_exit_e2e.py renders from its own run
    assert [s.attrs["id"] for s in dom.find("section")] == [s for s in SECTION_ORDER if s != "early_exit"]
    assert "**" not in dom.text
    assert all(stage["name"] in dom.text for stage in metrics["stages"])
    assert fmt.pct(int8["accuracy"]) in dom.text and "fast-host" in dom.text
    images = dom.find("img")
    assert [i.attrs["data-file"] for i in images] == ["plots/stages.png", "plots/latency_by_device.png",
                                                      "plots/accuracy_vs_latency.png"]
    for img in images:
        with Image.open(out / img.attrs["data-file"]) as png:
            assert int(img.attrs["data-natural-width"]) == png.width > 300
    assert {td.attrs["data-align"] for td in dom.with_class("td", "num")} == {"right"}

    with Image.open(screenshot(out / "report.html", tmp_path / "shot.png", tmp_path)) as image:
        shot = np.asarray(image.convert("RGB"))
    assert 0.3 < (shot == 255).all(axis=-1).mean() < 0.98
    assert len(np.unique(shot.reshape(-1, 3), axis=0)) > 200
