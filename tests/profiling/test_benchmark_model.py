"""benchmark_model / litert-benchmark output parsing (on real captured output) and the adb
transport's command construction. No Android device is attached here: the adb transport's device
side is NOT tested, only the commands it would run and the parsing of what they print."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge_pipeline.profiling.benchmark_model import benchmark_model_flags, litert_benchmark_command, parse_benchmark_output
from edge_pipeline.profiling.devices import Budget, DeviceProfile
from edge_pipeline.profiling.runner import benchmark_profile_fields
from edge_pipeline.profiling.transports import make_transport

DATA = Path(__file__).parent / "data"


def test_parses_real_litert_benchmark_output_like_its_own_json():
    parsed = parse_benchmark_output((DATA / "litert_benchmark_tiny_int8.txt").read_text())
    truth = json.loads((DATA / "litert_benchmark_tiny_int8.json").read_text())["latency"]
    lat = parsed["latency_ms"]
    assert parsed["tool"] == "litert-benchmark"
    assert parsed["init_ms"] == truth["init_ms"] and parsed["first_inference_ms"] == truth["warmup_first_ms"]
    assert parsed["warmup"] == {"runs": truth["num_warmup_runs"], "mean_ms": truth["warmup_avg_ms"]}
    assert (lat["runs"], lat["mean"], lat["std"], lat["median"]) == (
        truth["num_runs"], truth["avg_ms"], truth["std_ms"], truth["median_ms"])
    assert (lat["min"], lat["max"], lat["p95"]) == (truth["min_ms"], truth["max_ms"], truth["p95_ms"])


def test_parses_real_litert_benchmark_output_mobilenet():
    parsed = parse_benchmark_output((DATA / "litert_benchmark_mobilenet_v2_int8.txt").read_text())
    assert parsed["init_ms"] == 11.04 and parsed["first_inference_ms"] == 2.33
    assert parsed["warmup"] == {"runs": 10, "mean_ms": 2.83}
    lat = parsed["latency_ms"]
    assert (lat["runs"], lat["mean"], lat["median"], lat["std"], lat["min"], lat["max"]) == (625, 3.53, 2.45, 1.94, 1.82, 10.43)
    assert parsed["peak_memory_mb"] is None  # litert-benchmark reports no memory


# A FORMAT SAMPLE, not captured output: the line formats of TFLite's C++ benchmark_model as its
# source prints them (benchmark_model.cc / benchmark_tflite_model.cc), with made-up numbers. A
# backslash at a line's end continues it (one long line of the real output).
CPP_FORMAT_SAMPLE = """\
INFO: Num threads: [2]
INFO: Graph: [/data/local/tmp/edge-pipeline.Ab12Cd34/model.tflite]
INFO: Initialized session in 5.25ms.
INFO: Running benchmark for at least 10 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
INFO: count=94 first=9000 curr=5100 min=5000 max=9000 avg=5300.5 std=400 p5=5010 median=5250 p95=6000
INFO: Running benchmark for at least 50 iterations and at least 2 seconds but terminate if exceeding 120 seconds.
INFO: count=380 first=5200 curr=5150 min=4900 max=7000 avg=5210.25 std=150 p5=4950 median=5180 p95=5500
INFO: Inference timings in us: Init: 5250, First inference: 9000, Warmup (avg): 5300.5, Inference (avg): 5210.25
INFO: Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to the \
actual memory footprint of the model at runtime. Take the information at your discretion.
INFO: Memory footprint delta from the start of the tool (MB): init=2.5 overall=12.75
INFO: Overall peak memory footprint (MB) via periodic monitoring: 20.5
"""


def test_parses_the_cpp_benchmark_model_line_formats():
    parsed = parse_benchmark_output(CPP_FORMAT_SAMPLE)
    assert parsed["tool"] == "benchmark_model"
    assert parsed["init_ms"] == 5.25 and parsed["first_inference_ms"] == 9.0
    assert parsed["warmup"] == {"runs": 94, "mean_ms": 5.3005}
    lat = parsed["latency_ms"]
    assert lat["runs"] == 380 and lat["mean"] == 5.21025 and lat["std"] == 0.15 and lat["median"] == 5.18
    assert parsed["peak_memory_mb"] == 20.5 and parsed["memory_delta_mb"] == 12.75


def test_unrecognized_output_is_an_error():
    with pytest.raises(ValueError, match="not benchmark_model or litert-benchmark output"):
        parse_benchmark_output("Segmentation fault")


def pixel(tmp_path, **extra):
    binary = tmp_path / "benchmark_model"
    binary.write_bytes(b"\x7fELF")
    return DeviceProfile.model_validate({
        "name": "phone", "arch": "aarch64", "cores": 8, "threads": 2, "pin_cores": [6, 7],
        "runtime": {"name": "benchmark_model"}, "budget": {"warmup_runs": 3, "min_runs": 40, "min_seconds": 1, "max_seconds": 30},
        "transport": {"kind": "adb", "serial": "emulator-5554", "benchmark_model": str(binary), **extra},
    })


def test_adb_command_construction(tmp_path):
    t = make_transport(pixel(tmp_path))
    assert t.adb_base() == ["adb", "-s", "emulator-5554"]
    assert t.push_command(Path("/x/m.tflite"), "/data/local/tmp/edge-pipeline.Ab12Cd34/model.tflite") == [
        "adb", "-s", "emulator-5554", "push", "/x/m.tflite", "/data/local/tmp/edge-pipeline.Ab12Cd34/model.tflite"]
    shell = t.shell_command("ls")
    assert shell[:3] == ["adb", "-s", "emulator-5554"] and shell[3] == "shell" and shell[4] == "ls; echo __edge_pipeline_exit=$?"
    assert t.taskset_prefix() == ["taskset", "c0"]  # cores 6 and 7 as toybox's hex mask
    cmd = t.benchmark_command("/data/local/tmp/edge-pipeline.Ab12Cd34", "/data/local/tmp/edge-pipeline.Ab12Cd34/model.tflite", "timing")
    assert cmd == ("taskset c0 /data/local/tmp/edge-pipeline.Ab12Cd34/benchmark_model "
                   "--graph=/data/local/tmp/edge-pipeline.Ab12Cd34/model.tflite --num_threads=2 --warmup_runs=3 "
                   "--num_runs=40 --min_secs=1 --max_secs=30")
    assert t.is_our_temp_dir("/data/local/tmp/edge-pipeline.Ab12Cd34") and not t.is_our_temp_dir("/data/local/tmp")


def test_benchmark_flags_per_mode():
    budget = Budget(warmup_runs=2, min_runs=20, min_seconds=0.5, max_seconds=9)
    assert "--report_peak_memory_footprint=true" in benchmark_model_flags("m", 1, budget, "memory")
    assert "--enable_op_profiling=true" in benchmark_model_flags("m", 1, budget, "ops")
    assert litert_benchmark_command("lb", "m.tflite", 4, 10, 100) == [
        "lb", "--model", "m.tflite", "--num_threads", "4", "--warmup_runs", "10", "--num_runs", "100"]


def test_benchmark_model_runs_become_a_profile_with_validity(tmp_path):
    device = pixel(tmp_path)
    parsed = parse_benchmark_output(CPP_FORMAT_SAMPLE)
    fields = benchmark_profile_fields(parsed, parsed, None, device)
    assert fields["valid"] and fields["peak_rss_mb"] == 20.5 and fields["latency_ms"]["median"] == 5.18
    few = parse_benchmark_output(CPP_FORMAT_SAMPLE.replace("count=380", "count=12"))
    assert benchmark_profile_fields(few, parsed, None, device)["invalid_reasons"] == ["only 12 timed runs (min_runs=40)"]


def test_adb_check_without_adb_binary_or_device_binary(tmp_path):
    assert "not installed" in make_transport(pixel(tmp_path, adb="/nonexistent/adb")).check()
    device = pixel(tmp_path)
    device.transport.benchmark_model = str(tmp_path / "missing")
    assert "is not a file" in make_transport(device).check()
