"""profile_model on this host through the local transport: the DESIGN.md profile JSON, a separate
memory run, the outputs check, core pinning and the device's op restrictions."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from edge_pipeline.errors import UserError
from edge_pipeline.profiling.devices import load_device_file
from edge_pipeline.profiling.runner import compare_outputs, profile_model
from tests.profiling.conftest import SHORT_BUDGET, device_file

CONTRACT_KEYS = {"device", "model", "model_sha256", "model_size_bytes", "runtime", "threads", "arch", "init_ms",
                 "first_inference_ms", "warmup", "latency_ms", "peak_rss_mb", "valid", "invalid_reasons"}


def test_host_profile_has_the_contract_fields_and_outputs_match(tiny_models, tmp_path):
    device = load_device_file(device_file(tmp_path, "fast-host", "transport: {kind: local}\n" + SHORT_BUDGET))
    profile = profile_model(tiny_models["int8"], device, samples=np.load(tiny_models["samples"]))
    assert set(profile) >= CONTRACT_KEYS
    assert profile["device"] == "fast-host" and profile["model"] == "model_int8.tflite"
    assert profile["model_size_bytes"] == tiny_models["int8"].stat().st_size
    assert profile["runtime"]["name"] == "ai-edge-litert" and profile["emulated"] is False
    assert set(profile["latency_ms"]) == {"runs", "min", "median", "mean", "p90", "max", "std"}
    assert profile["latency_ms"]["runs"] >= 10 and profile["peak_rss_mb"] > 10
    check = profile["outputs_check"]
    assert check == {**check, "samples": 8, "match": True, "top1_agreement": 1.0, "max_abs_diff": 0.0}


@pytest.mark.skipif(shutil.which("taskset") is None, reason="taskset (util-linux) not installed")
def test_pin_cores_pins_the_agent(tiny_models, tmp_path):
    device = load_device_file(device_file(tmp_path, "pinned", "cores: 64\npin_cores: [0]\n" + SHORT_BUDGET))
    profile = profile_model(tiny_models["float32"], device, threads=1)
    assert profile["affinity"] == [0]


def test_ops_outside_the_device_allowed_ops_are_refused(tiny_models, tmp_path):
    device = load_device_file(device_file(tmp_path, "no-conv", "allowed_ops: [FULLY_CONNECTED, MEAN, PAD]\n"))
    with pytest.raises(UserError, match=r"model_int8.tflite: ops CONV_2D are not in device no-conv's allowed_ops"):
        profile_model(tiny_models["int8"], device)


def test_budget_miss_makes_the_profile_invalid(tiny_models, tmp_path):
    body = "budget: {warmup_runs: 0, min_runs: 100000000, min_seconds: 0, max_seconds: 0.2, max_rel_std: 10}\n"
    device = load_device_file(device_file(tmp_path, "impatient", body))
    profile = profile_model(tiny_models["float32"], device)
    assert profile["valid"] is False and "min_runs=100000000" in profile["invalid_reasons"][0]


@pytest.mark.parametrize("values, reference, scale, match", [
    ([[1.0, 2.0]], [[1.0, 2.0]], 0.1, True),
    ([[1.0, 2.1]], [[1.0, 2.0]], 0.1, True),    # one quantization step
    ([[1.0, 2.3]], [[1.0, 2.0]], 0.1, False),   # three steps
    ([[2.0, 1.0]], [[1.0, 2.0]], 5.0, False),   # top-1 flipped
    ([[1.0, 2.0 + 1e-5]], [[1.0, 2.0]], None, True),  # float: 1e-4 of the range
    ([[1.0, 2.001]], [[1.0, 2.0]], None, False),
])
def test_compare_outputs_tolerance(values, reference, scale, match):
    assert compare_outputs(values, reference, scale)["match"] is match
