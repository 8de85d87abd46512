"""A recipe with `profile: {devices: [host-like, qemu-aarch64-like]}` gets the device x model table
and plots in its report (real run: train, quantize, export, profile on the host and the emulator)."""

from __future__ import annotations

import json
import re
import shutil

import pytest

from edge_pipeline import cli

RECIPE = """\
name: devices-e2e
seed: 0
data: {{dataset: digits, image_size: 16, batch_size: 64}}
model: {{arch: vgg_small, width: 0.5}}
stages:
  - train: {{epochs: 2, lr: 0.05}}
  - quantize: {{mode: int8, calibration_samples: 64}}
  - export: {{format: tflite}}
  - profile: {{devices: [{host}, {qemu}], precisions: [int8], outputs_check: 4}}
"""


@pytest.mark.e2e
@pytest.mark.slow  # ~60-110 s: a real train/export run, then the int8 model on the host and under qemu
@pytest.mark.skipif(shutil.which("qemu-aarch64-static") is None, reason="qemu-user-static not installed (make system-deps)")
def test_recipe_with_host_and_qemu_reports_the_device_table(tmp_path, capsys):
    host = tmp_path / "fast-host.yaml"
    host.write_text("transport: {kind: local}\n"
                    "budget: {warmup_runs: 2, min_runs: 10, min_seconds: 0.05, max_seconds: 10, max_rel_std: 10}\n")
    qemu = tmp_path / "qemu-aarch64.yaml"
    qemu.write_text("arch: aarch64\ntransport: {kind: qemu}\n"
                    "budget: {warmup_runs: 1, min_runs: 5, min_seconds: 0.05, max_seconds: 10, max_rel_std: 10}\n")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE.format(host=host, qemu=qemu))
    out = tmp_path / "run"
    assert cli.main(["run", str(recipe), "--out", str(out)]) == 0

    profiles = {p.name: json.loads(p.read_text()) for p in (out / "profiles").glob("*.json")}
    assert set(profiles) == {"fast-host__model_int8.json", "qemu-aarch64__model_int8.json"}
    emulated = profiles["qemu-aarch64__model_int8.json"]
    assert emulated["arch"] == "aarch64" and emulated["emulated"] is True
    assert emulated["outputs_check"]["match"] and emulated["outputs_check"]["samples"] == 4

    report = (out / "report.md").read_text()
    section = report[report.index("## Devices"):]
    assert re.search(r"\| fast-host \| model_int8 \| [\d.]+ \|", section)
    assert re.search(r"\| qemu-aarch64 \(emulated\) \| model_int8 \| [\d.]+ \|", section)
    html = (out / "report.html").read_text()
    assert 'data-file="plots/latency_by_device.png"' in html and 'data-file="plots/accuracy_vs_latency.png"' in html
    assert (out / "plots" / "latency_by_device.png").stat().st_size > 5000
