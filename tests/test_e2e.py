"""End to end: a tiny recipe from training to profiled int8 TFLite, checked against the contracts."""

from __future__ import annotations

import json

import pytest

from edge_pipeline.cli import main

from .conftest import TINY_HEAD, TINY_TORCH_STAGES, write

pytestmark = pytest.mark.e2e

PROFILE_KEYS = {
    "device", "model", "model_sha256", "model_size_bytes", "runtime", "threads", "arch", "init_ms",
    "first_inference_ms", "warmup", "latency_ms", "peak_rss_mb", "valid", "invalid_reasons",
}


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, fast_device):
    root = tmp_path_factory.mktemp("e2e")
    recipe = write(root / "tiny.yaml", TINY_HEAD + TINY_TORCH_STAGES + f"""\
  - quantize: {{mode: int8, calibration_samples: 64}}
  - export: {{format: tflite}}
  - profile: {{devices: [{fast_device}]}}
""")
    out = root / "run"
    assert main(["run", str(recipe), "--out", str(out)]) == 0
    return out, json.loads((out / "metrics.json").read_text())


def test_export_entry_follows_the_contract(full_run):
    out, metrics = full_run
    export = next(s for s in metrics["stages"] if s["type"] == "export")
    assert set(export) == {"name", "type", "status", "seconds", "artifacts"}
    by_precision = {a["precision"]: a for a in export["artifacts"]}
    assert set(by_precision) == {"float32", "int8"}
    for art in export["artifacts"]:
        assert set(art) == {"format", "precision", "path", "size_bytes", "accuracy", "ops"}
        assert art["path"] == f"06-export/model_{art['precision']}.tflite"
        assert (out / art["path"]).stat().st_size == art["size_bytes"]
        assert "TRANSPOSE" not in art["ops"] and art["ops"]["CONV_2D"] >= 1
    finetune = next(s for s in metrics["stages"] if s["type"] == "finetune")["model"]["accuracy"]
    assert by_precision["float32"]["accuracy"] == pytest.approx(finetune, abs=1e-6)
    assert by_precision["int8"]["accuracy"] >= finetune - 0.05
    assert by_precision["int8"]["size_bytes"] < by_precision["float32"]["size_bytes"]
    bundle = {p.name for p in (out / "06-export").iterdir()}
    assert {"model.onnx", "labels.txt", "metadata.json"} <= bundle
    meta = json.loads((out / "06-export" / "metadata.json").read_text())
    assert meta["input_shape"] == [1, 16, 16, 1] and meta["layout"] == "NHWC"
    assert meta["files"]["int8"]["input"]["dtype"] == "int8"


def test_profiles_follow_the_contract(full_run):
    out, metrics = full_run
    profile = next(s for s in metrics["stages"] if s["type"] == "profile")
    assert profile["profiles"] == ["profiles/fast-host__model_float32.json", "profiles/fast-host__model_int8.json"]
    for rel in profile["profiles"]:
        data = json.loads((out / rel).read_text())
        assert set(data) >= PROFILE_KEYS
        assert data["runtime"]["name"] == "ai-edge-litert"
        lat = data["latency_ms"]
        assert lat["runs"] >= 10 and 0 < lat["min"] <= lat["median"] <= lat["p90"] <= lat["max"]
        assert data["peak_rss_mb"] > 10 and data["valid"] is True


def test_report_shows_every_stage_and_latency(full_run):
    out, _ = full_run
    report = (out / "report.md").read_text()
    for name in ("train", "restructure", "prune", "finetune", "tflite int8", "fast-host"):
        assert name in report


def test_rerun_is_fully_cached(full_run):
    out, _ = full_run
    recipe = out.parent / "tiny.yaml"
    assert main(["run", str(recipe), "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert {s["status"] for s in metrics["stages"]} == {"cached"}


def test_inspect_and_profile_commands_on_the_exported_model(full_run, fast_device, capsys, tmp_path):
    out, _ = full_run
    model = out / "06-export" / "model_int8.tflite"
    assert main(["inspect", str(model), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["inputs"][0]["dtype"] == "int8" and info["transposes"] == 0
    assert main(["profile", str(model), "--device-file", str(fast_device), "--out", str(tmp_path / "p.json")]) == 0
    assert set(json.loads((tmp_path / "p.json").read_text())) >= PROFILE_KEYS


@pytest.mark.parametrize("content", [b"", b"not a model at all", None])
def test_corrupt_tflite_is_a_clear_error(full_run, tmp_path, capsys, content):
    out, _ = full_run
    bad = tmp_path / "bad.tflite"
    good = (out / "06-export" / "model_int8.tflite").read_bytes()
    bad.write_bytes(content if content is not None else good[: len(good) // 3])
    for command in (["inspect", str(bad)], ["profile", str(bad)]):
        assert main(command) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"error: {bad}:")
