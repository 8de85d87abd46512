"""TFLite's benchmark tools: command lines, and their text output parsed into profile fields.

Two tools print results as text:
- `benchmark_model`, the C++ tool (Android/Linux binaries): lines such as
  `count=50 first=.. curr=.. min=.. max=.. avg=.. std=..` (microseconds), `Inference timings in us:
  Init: .., First inference: .., Warmup (avg): .., Inference (avg): ..`, `Memory footprint delta from
  the start of the tool (MB): init=.. overall=..`, `Overall peak memory footprint (MB) via periodic
  monitoring: ..`, and with `--enable_op_profiling=true` per-node-type tables.
- `litert-benchmark`, the Python tool shipped with ai-edge-litert >= 2.3.0: a `BENCHMARK RESULTS`
  block in milliseconds (initialization, warmup first/avg, inference avg/min/max/median/std/p5/p95).

`parse_benchmark_output` recognizes either and returns the same dict; fields a tool does not print
are None. The test fixture `tests/profiling/data/litert_benchmark_output.txt` is real output of
`litert-benchmark` on this machine.
"""

from __future__ import annotations

import re
from typing import Any

_NUM = r"([-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)"


def _find(pattern: str, text: str, group: int = 1) -> float | None:
    match = re.search(pattern, text)
    return float(match.group(group)) if match else None


def _findall_last(pattern: str, text: str) -> re.Match | None:
    matches = list(re.finditer(pattern, text))
    return matches[-1] if matches else None


def parse_benchmark_output(text: str) -> dict[str, Any]:
    """init / first inference / warmup / latency (ms) / memory (MB) / op profile from a benchmark tool's text."""
    if "BENCHMARK RESULTS" in text:
        return _parse_litert_benchmark(text)
    if "Inference timings in us" in text or re.search(r"count=\d+ first=", text):
        return _parse_cpp(text)
    raise ValueError("not benchmark_model or litert-benchmark output (no 'Inference timings' or 'BENCHMARK RESULTS')")


def _parse_litert_benchmark(text: str) -> dict[str, Any]:
    def ms(label: str) -> float | None:
        return _find(re.escape(label) + r":\s*" + _NUM + r"\s*ms", text)

    runs = _find(r"Inference \(avg\):\s*" + _NUM + r"\s*ms\s*\((\d+) runs\)", text, 2)
    warm_runs = _find(r"Warmup \(avg\):\s*" + _NUM + r"\s*ms\s*\((\d+) runs\)", text, 2)
    return {
        "tool": "litert-benchmark",
        "init_ms": ms("Model initialization"),
        "first_inference_ms": ms("Warmup (first)"),
        "warmup": {"runs": int(warm_runs) if warm_runs is not None else None, "mean_ms": ms("Warmup (avg)")},
        "latency_ms": {
            "runs": int(runs) if runs is not None else None, "min": ms("Inference (min)"),
            "median": ms("Inference (median)"), "mean": ms("Inference (avg)"), "p90": None,
            "p95": ms("Inference (p95)"), "max": ms("Inference (max)"), "std": ms("Inference (std)"),
        },
        "peak_memory_mb": None, "memory_delta_mb": None, "op_profile": None,
    }


def _parse_cpp(text: str) -> dict[str, Any]:
    us = 1000.0
    summary = _findall_last(
        r"Inference timings in us: Init: " + _NUM + r", First inference: " + _NUM
        + r", Warmup \(avg\): " + _NUM + r", Inference \(avg\): " + _NUM, text)
    # The last `count=` line with first/avg/std is the timed loop (the earlier one is the warmup).
    counts = list(re.finditer(
        r"count=(\d+) first=" + _NUM + r" curr=" + _NUM + r" min=" + _NUM + r" max=" + _NUM
        + r" avg=" + _NUM + r" std=" + _NUM + r"(?: p5=" + _NUM + r" median=" + _NUM + r" p95=" + _NUM + r")?", text))
    warm = counts[0] if len(counts) >= 2 else None
    timed = counts[-1] if counts else None
    latency: dict[str, Any] = {"runs": None, "min": None, "median": None, "mean": None, "p90": None, "p95": None, "max": None, "std": None}
    if timed:
        latency.update(runs=int(timed.group(1)), min=float(timed.group(4)) / us, max=float(timed.group(5)) / us,
                       mean=float(timed.group(6)) / us, std=float(timed.group(7)) / us)
        if timed.group(9):
            latency.update(median=float(timed.group(9)) / us, p95=float(timed.group(10)) / us)
    if summary and latency["mean"] is None:
        latency["mean"] = float(summary.group(4)) / us
    delta = _findall_last(r"Memory footprint delta from the start of the tool \(MB\): init=" + _NUM + r" overall=" + _NUM, text)
    peak_line = _find(r"Overall peak memory footprint \(MB\) via periodic monitoring: " + _NUM, text)
    peak_old = _findall_last(r"Peak memory footprint \(MB\): init=" + _NUM + r" overall=" + _NUM, text)
    peak = peak_line if peak_line is not None else (float(peak_old.group(2)) if peak_old else None)
    return {
        "tool": "benchmark_model",
        "init_ms": float(summary.group(1)) / us if summary else None,
        "first_inference_ms": float(summary.group(2)) / us if summary else None,
        "warmup": {"runs": int(warm.group(1)) if warm else None, "mean_ms": float(summary.group(3)) / us if summary else None},
        "latency_ms": latency,
        "peak_memory_mb": peak,
        "memory_delta_mb": float(delta.group(2)) if delta else None,
        "op_profile": _parse_op_summary(text),
    }


def _parse_op_summary(text: str) -> dict[str, Any] | None:
    """`Summary by node type` table of --enable_op_profiling: node type -> avg ms and % of the run."""
    start = text.find("Summary by node type")
    if start < 0:
        return None
    ops: dict[str, Any] = {}
    for line in text[start:].splitlines()[2:]:
        cells = line.split()
        if not cells or cells[0].startswith("="):
            if ops:
                break
            continue
        # [node type] [count] [avg ms] [avg %] [cdf %] [mem KB] [times called]
        if len(cells) >= 4 and re.fullmatch(_NUM, cells[1]) and re.fullmatch(_NUM, cells[2]):
            ops[cells[0]] = {"count": int(float(cells[1])), "avg_ms": float(cells[2]), "percent": float(cells[3].rstrip("%"))}
    return {"available": True, "by_node_type": ops} if ops else None


def benchmark_model_flags(model: str, threads: int, budget, mode: str) -> list[str]:
    """Flags for the C++ benchmark_model: `timing` honours the budget; `memory` is a short run that
    reports peak memory (a separate process, as for the agent); `ops` adds the per-op profile."""
    flags = [f"--graph={model}", f"--num_threads={threads}"]
    if mode == "timing":
        flags += [f"--warmup_runs={budget.warmup_runs}", f"--num_runs={budget.min_runs}",
                  f"--min_secs={budget.min_seconds:g}", f"--max_secs={budget.max_seconds:g}"]
    elif mode == "memory":
        flags += ["--warmup_runs=1", "--num_runs=3", "--report_peak_memory_footprint=true",
                  "--memory_footprint_check_interval_ms=5"]
    elif mode == "ops":
        flags += ["--warmup_runs=1", "--num_runs=10", "--enable_op_profiling=true"]
    else:  # pragma: no cover - programming error
        raise ValueError(mode)
    return flags


def litert_benchmark_command(tool: str, model: str, threads: int, warmup: int, runs: int) -> list[str]:
    """Google's Python `litert-benchmark` (ai-edge-litert >= 2.3.0) on the CPU."""
    return [tool, "--model", model, "--num_threads", str(threads), "--warmup_runs", str(warmup), "--num_runs", str(runs)]
