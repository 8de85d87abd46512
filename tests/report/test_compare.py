"""`compare` over two runs x two devices: the table, the fastest/smallest marks, and the PNG plots
embedded in report.html (opened with PIL and checked)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edge_pipeline import cli
from edge_pipeline.errors import UserError
from edge_pipeline.report.compare import FASTEST, SMALLEST, device_blocks, load_records, write_compare
from edge_pipeline.report.doc import blocks_markdown
from tests.report.conftest import ACCURACY


def test_entries_cover_two_runs_by_two_devices(two_runs):
    records = load_records(two_runs)
    assert len(records) == 8
    assert {e.device for e in records} == {"fast-1t", "fast-2t"}
    assert {e.model for e in records} == {"run-a/model_float32", "run-a/model_int8", "run-b/model_float32", "run-b/model_int8"}
    for e in records:
        assert e.accuracy == ACCURACY[e.run][e.precision] and e.stage == "export"
        assert e.median_ms > 0 and e.p90_ms >= e.median_ms and e.peak_mb > 10 and e.valid


def test_fastest_and_smallest_marked_once_per_device(two_runs):
    records = load_records(two_runs)
    for device in ("fast-1t", "fast-2t"):
        group = [e for e in records if e.device == device]
        fastest = [e for e in group if FASTEST in e.marks]
        assert len(fastest) == 1 and fastest[0].median_ms == min(e.median_ms for e in group)
        smallest = [e for e in group if SMALLEST in e.marks]
        assert smallest and all(e.precision == "int8" for e in smallest)  # int8 is the smaller file
        assert all(e.size_bytes == min(x.size_bytes for x in group) for e in smallest)


def test_profile_files_inside_a_run_pick_up_accuracy(two_runs):
    files = sorted((two_runs[0] / "profiles").glob("*.json"))
    records = load_records(files)
    assert len(records) == 4 and all(e.accuracy is not None for e in records)


def png(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB"))


def test_write_compare_renders_table_and_plots(two_runs, tmp_path):
    records = load_records(two_runs)
    written = write_compare(records, tmp_path / "cmp")
    md = written["markdown"].read_text()
    rows = [line for line in md.splitlines() if line.startswith("| fast-")]
    assert len(rows) == 8 and md.count(FASTEST) == 2
    html = written["html"].read_text()
    images = re.findall(r'<img src="data:image/png;base64,[^"]+" alt="[^"]*" data-file="([^"]+)"', html)
    assert images == ["plots/latency_by_device.png", "plots/accuracy_vs_latency.png"]
    for rel in images:
        pixels = png(tmp_path / "cmp" / rel)
        height, width, _ = pixels.shape
        assert width >= 600 and height >= 300
        # A real chart: mostly white background, but with many distinct colors (bars, text, points).
        assert (pixels == 255).all(axis=-1).mean() > 0.5
        assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 20
    # the bar colours of the latency plot: the fastest (green) and the others (blue) both appear
    latency = png(tmp_path / "cmp" / "plots/latency_by_device.png").reshape(-1, 3)
    assert (np.abs(latency.astype(int) - [0x2a, 0x9d, 0x8f]).sum(axis=1) < 10).sum() > 100
    assert (np.abs(latency.astype(int) - [0x45, 0x7b, 0x9d]).sum(axis=1) < 10).sum() > 100
    data = json.loads(written["json"].read_text())
    assert len(data["entries"]) == 8
    assert {"device", "model", "file", "run", "stage", "precision", "median_ms", "p90_ms", "std_ms", "peak_mb", "size_bytes",
            "accuracy", "valid", "emulated", "outputs_match", "sha256", "marks", "notes"} <= set(data["entries"][0])


def test_compare_command(two_runs, tmp_path, capsys):
    out = tmp_path / "cli"
    assert cli.main(["compare", *map(str, two_runs), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "run-a/model_int8" in printed and "fastest" in printed and "smallest" in printed
    assert (out / "report.html").is_file() and (out / "plots" / "latency_by_device.png").is_file()


def test_compare_bad_paths_exit_2(tmp_path, capsys):
    assert cli.main(["compare", str(tmp_path / "nope")]) == 2
    assert "no such file or directory" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text("{\"device\": 1")
    assert cli.main(["compare", str(bad)]) == 2
    assert "not valid JSON" in capsys.readouterr().err
    other = tmp_path / "other.json"
    other.write_text("{\"hello\": 1}")
    with pytest.raises(UserError, match="not a profile file"):
        load_records([other])


def test_emulated_devices_are_labelled(two_runs, tmp_path):
    profile = json.loads(next((two_runs[0] / "profiles").glob("*.json")).read_text())
    path = tmp_path / "qemu__m.json"
    path.write_text(json.dumps({**profile, "device": "qemu-aarch64", "emulated": True}))
    table = blocks_markdown(device_blocks(load_records([path]), None, tmp_path))
    assert "qemu-aarch64 (emulated)" in table and "never as device time" in table


# A hand-edited or damaged profile (issue 11.8): one error line naming the file and the field.
DAMAGED = [
    ("latency_ms", "median", "fast", "latency_ms.median: must be a finite number of milliseconds >= 0, got 'fast'"),
    ("latency_ms", "median", float("nan"), "latency_ms.median: must be a finite number of milliseconds >= 0, got nan"),
    ("latency_ms", "p90", float("inf"), "latency_ms.p90: must be a finite number of milliseconds >= 0, got inf"),
    ("latency_ms", "median", -3, "latency_ms.median: must be a finite number of milliseconds >= 0, got -3"),
    (None, "latency_ms", [1, 2], "latency_ms: must be an object of latency figures, got [1, 2]"),
    (None, "peak_rss_mb", "12", "peak_rss_mb: must be a finite number of MB >= 0, got '12'"),
    (None, "device", 7, "device: must be a device name, got 7"),
    (None, "valid", "yes", "valid: must be true or false, got 'yes'"),
    (None, "invalid_reasons", "slow", "invalid_reasons: must be a list of strings, got 'slow'"),
]


@pytest.mark.parametrize("parent,key,value,fragment", DAMAGED, ids=[f"{d[1]}={d[2]!r}" for d in DAMAGED])
def test_damaged_profile_field_is_one_error_line(two_runs, tmp_path, capsys, parent, key, value, fragment):
    profile = json.loads(next((two_runs[0] / "profiles").glob("*.json")).read_text())
    (profile[parent] if parent else profile)[key] = value
    path = tmp_path / "damaged.json"
    path.write_text(json.dumps(profile))  # NaN and Infinity as JSON's non-standard literals, as json writes them
    assert cli.main(["compare", str(path), "--out", str(tmp_path / "cmp")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {path}: {fragment}"), err
    assert not (tmp_path / "cmp").exists()
