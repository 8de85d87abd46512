"""The standalone agent: Python 3.8 syntax, no project imports, and what each mode reports."""

from __future__ import annotations

import ast
import json
import subprocess
import sys

import numpy as np
import pytest

from edge_pipeline.artifacts import sha256_file as sha256_of
from edge_pipeline.profiling.transports.base import AGENT


def test_agent_is_python38_and_self_contained():
    source = AGENT.read_text()
    ast.parse(source, feature_version=(3, 8))  # no syntax newer than 3.8 (walrus is 3.8: allowed)
    tree = ast.parse(source)
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert "edge_pipeline" not in imported
    assert imported <= {"__future__", "argparse", "json", "os", "platform", "sys", "time", "numpy", "hashlib",
                        "resource", "importlib", "ai_edge_litert", "tflite_runtime", "tensorflow",
                        "gc", "io", "math", "zipfile"}  # standard library of 3.8: the adaptive (early-exit) mode
    for newer in ("removeprefix", "removesuffix", "math.dist", "functools.cache", "| None"):
        assert newer not in source, newer


def agent(*args):
    proc = subprocess.run([sys.executable, str(AGENT), *map(str, args)], capture_output=True, text=True, timeout=120)
    return proc.returncode, json.loads(proc.stdout.strip().splitlines()[-1])


def test_timing_mode_reports_runtime_cpu_budget_and_validity(tiny_models):
    code, result = agent(tiny_models["int8"], "--mode", "timing", "--warmup", "3", "--min-runs", "20",
                         "--min-seconds", "0.05", "--max-seconds", "5", "--max-rel-std", "10", "--threads", "1")
    assert code == 0 and result["ok"]
    assert result["runtime"] == {"name": "ai-edge-litert", "version": "2.1.0"}
    assert result["arch"] == "x86_64" and result["cores"] >= 1 and result["threads"] == 1 and result["cpu"]
    lat = result["latency_ms"]
    assert lat["runs"] >= 20 and lat["min"] <= lat["median"] <= lat["p90"] <= lat["max"]
    assert result["warmup"]["runs"] == 3 and result["valid"] and result["invalid_reasons"] == []
    ops = result["op_profile"]
    assert ops["available"] is False and ops["op_counts"]["CONV_2D"] == 2 and "benchmark_model" in ops["reason"]


def test_a_run_that_misses_its_budget_is_invalid_with_reasons(tiny_models):
    code, result = agent(tiny_models["float32"], "--mode", "timing", "--warmup", "0", "--min-runs", "100000000",
                         "--min-seconds", "0", "--max-seconds", "0.2", "--max-rel-std", "10")
    assert code == 0 and result["valid"] is False
    assert any("timed runs in max_seconds=0.2" in r for r in result["invalid_reasons"])


def test_memory_mode_is_a_separate_peak_rss(tiny_models):
    code, result = agent(tiny_models["int8"], "--mode", "memory")
    assert code == 0 and 10 < result["peak_rss_mb"] < 2000 and "latency_ms" not in result


def test_outputs_mode_inline_matches_in_process_interpreter(tiny_models):
    from edge_pipeline.convert.runtime import dequantize_output, load_interpreter, quantize_input

    samples = np.load(tiny_models["samples"])
    code, result = agent(tiny_models["int8"], "--mode", "outputs", "--inputs", tiny_models["samples"])
    assert code == 0 and result["shape"] == [8, 4]
    interp = load_interpreter(tiny_models["int8"])
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    expected = []
    for x in samples:
        interp.set_tensor(inp["index"], quantize_input(x[None], inp))
        interp.invoke()
        expected.append(dequantize_output(interp.get_tensor(out["index"]), out)[0])
    np.testing.assert_array_equal(np.asarray(result["values"], np.float32), np.stack(expected))


def test_sha256_mismatch_is_refused(tiny_models):
    code, result = agent(tiny_models["int8"], "--mode", "memory", "--sha256", "0" * 64)
    assert code == 3 and not result["ok"] and "sha256 mismatch" in result["error"]
    code, result = agent(tiny_models["int8"], "--mode", "memory", "--sha256", sha256_of(tiny_models["int8"]))
    assert code == 0 and result["model_sha256"] == sha256_of(tiny_models["int8"])


@pytest.mark.parametrize("runtime", ["tflite-runtime"])
def test_missing_runtime_is_reported_not_raised(tiny_models, runtime):
    code, result = agent(tiny_models["int8"], "--runtime", runtime)
    assert code == 3 and "no TFLite runtime importable" in result["error"]


def load_agent_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("edge_agent", AGENT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("classes", [2, 10, 64, 65, 1000])
@pytest.mark.parametrize("dtype", ["int8", "uint8", "float32"])
@pytest.mark.parametrize("measure", ["entropy", "max_softmax"])
def test_exit_reader_agrees_with_the_host_uncertainty(classes, dtype, measure):
    """The device's exit check (tables over integer gaps, plain Python for few classes) gives the
    uncertainty and class the host computes from the dequantized logits, whatever the class count."""
    from edge_pipeline.compress.early_exit import uncertainty

    reader_of = load_agent_module()._exit_reader
    rng = np.random.default_rng(classes)
    for spread in (0.01, 1.0, 30.0):  # near-uniform to near-one-hot rows
        if dtype == "float32":
            raw = (rng.standard_normal((1, classes)) * spread).astype(np.float32)
            detail = {"shape": [1, classes], "dtype": np.float32, "quantization": (0.0, 0)}
            logits = raw.astype(np.float64)
        else:
            info = np.iinfo(dtype)
            raw = rng.integers(info.min, info.max + 1, (1, classes)).astype(dtype)
            scale, zero = spread / 40.0, int(info.min) + 100
            detail = {"shape": [1, classes], "dtype": np.dtype(dtype).type, "quantization": (scale, zero)}
            logits = (raw.astype(np.float64) - zero) * scale
        got, predicted = reader_of(detail, measure, np)(raw)
        assert got == pytest.approx(float(uncertainty(logits, measure)[0]), abs=1e-9)
        assert predicted == int(logits[0].argmax())
