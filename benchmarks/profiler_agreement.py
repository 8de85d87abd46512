"""Does our agent measure what Google's own tool measures?

For three real models (MobileNetV2 96x96 float32 and int8, ResNet-20 32x32 int8, converted by the
project's export path), the host median latency from our agent vs Google's `litert-benchmark`
(ships with ai-edge-litert >= 2.3.0), on the same file, the same thread count and the same runtime:
both run in a small side venv with ai-edge-litert 2.3.0 (onnx2tf pins 2.1.0 in the main venv), built
once under ~/.cache/edge-pipeline/ (network only for that). The two tools alternate, 5 rounds each,
both pinned to one core, and the median of each tool's round medians is compared. Prints one JSON object; ratio = agent /
litert-benchmark (1.0 = perfect agreement; the goal is within 10%).

    python benchmarks/profiler_agreement.py [--threads 1] [--rounds 3] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge_pipeline.profiling.benchmark_model import litert_benchmark_command, parse_benchmark_output
from edge_pipeline.profiling.emulator import cache_root
from edge_pipeline.profiling.transports.base import AGENT

SIDE_PACKAGES = ["ai-edge-litert==2.3.0", "numpy==1.26.4"]
MODELS = [  # (label, arch, image size, precision)
    ("mobilenet_v2_96_float32", "torchvision:mobilenet_v2", 96, "float32"),
    ("mobilenet_v2_96_int8", "torchvision:mobilenet_v2", 96, "int8"),
    ("resnet20_32_int8", "resnet20", 32, "int8"),
]


def side_venv() -> Path:
    """python of the side venv with ai-edge-litert 2.3.0 (+ litert-benchmark), built once."""
    venv = cache_root() / "litert-2.3.0-venv"
    python = venv / "bin" / "python"
    stamp = venv / ".complete"
    if stamp.is_file() and stamp.read_text() == json.dumps(SIDE_PACKAGES):
        return python
    print(f"building the side venv (one time): {venv} with {', '.join(SIDE_PACKAGES)}", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *SIDE_PACKAGES], check=True)
    stamp.write_text(json.dumps(SIDE_PACKAGES))
    return python


def make_models(out: Path) -> dict[str, Path]:
    import numpy as np
    import torch

    from edge_pipeline.convert.onnx_export import export_onnx
    from edge_pipeline.convert.tflite_convert import convert_to_tflite
    from edge_pipeline.models import BaseSpec, build_model

    files: dict[str, Path] = {}
    by_arch: dict[tuple[str, int], list[tuple[str, str]]] = {}
    for label, arch, size, precision in MODELS:
        by_arch.setdefault((arch, size), []).append((label, precision))
    for (arch, size), wanted in by_arch.items():
        torch.manual_seed(0)
        module = build_model(BaseSpec(arch=arch, num_classes=10, in_channels=3, image_size=size)).eval()
        folder = out / arch.replace(":", "_")
        folder.mkdir(parents=True, exist_ok=True)
        export_onnx(module, (1, 3, size, size), folder / "model.onnx")
        rng = np.random.default_rng(0)
        images01 = rng.random((32, size, size, 3), dtype=np.float32)
        calibration = (images01 - 0.45) / 0.25
        converted = convert_to_tflite(folder / "model.onnx", folder, sorted({p for _, p in wanted}), images01, calibration)
        for label, precision in wanted:
            files[label] = Path(converted[precision])
    return files


PIN: list[str] = []  # taskset prefix, set in main: both tools on the same core, no migrations


def agent_median(python: Path, model: Path, threads: int) -> tuple[float, dict]:
    cmd = [*PIN, str(python), str(AGENT), str(model), "--mode", "timing", "--runtime", "ai-edge-litert",
           "--threads", str(threads), "--warmup", "10", "--min-runs", "300", "--min-seconds", "2", "--max-seconds", "60",
           "--max-rel-std", "10"]
    result = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1])
    if not result.get("ok"):
        raise SystemExit(f"agent failed on {model.name}: {result.get('error')}")
    return result["latency_ms"]["median"], result


def litert_median(python: Path, model: Path, threads: int, runs: int, keep: Path | None) -> tuple[float, str]:
    tool = python.parent / "litert-benchmark"
    proc = subprocess.run([*PIN, *litert_benchmark_command(str(tool), str(model), threads, warmup=10, runs=runs)],
                          capture_output=True, text=True, check=True)
    parsed = parse_benchmark_output(proc.stdout)
    if keep is not None:
        (keep / f"litert_benchmark_{model.stem}_{model.parent.name}.txt").write_text(proc.stdout)
    return parsed["latency_ms"]["median"], proc.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--core", type=int, default=1, help="pin both tools to this CPU core (taskset); -1: no pinning")
    parser.add_argument("--keep", type=Path, help="save litert-benchmark's raw output here")
    args = parser.parse_args()
    import shutil

    if args.core >= 0 and shutil.which("taskset"):
        PIN[:] = ["taskset", "-c", str(args.core)]
    python = side_venv()
    version = subprocess.run([str(python), "-c", "from importlib import metadata; print(metadata.version('ai-edge-litert'))"],
                             capture_output=True, text=True, check=True).stdout.strip()
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="edge-pipeline-bench-") as tmp:
        models = make_models(Path(tmp))
        results = {}
        for label, model in models.items():
            ours, google = [], []
            for _ in range(args.rounds):  # alternate, so drift in machine load hits both tools alike
                median, agent_result = agent_median(python, model, args.threads)
                ours.append(median)
                # As many runs as the agent made (capped) so both tools sample similar time spans.
                runs = max(50, min(agent_result["latency_ms"]["runs"], 2000))
                google.append(litert_median(python, model, args.threads, runs, args.keep)[0])
            a, g = statistics.median(ours), statistics.median(google)
            results[label] = {
                "agent_median_ms": round(a, 4), "litert_benchmark_median_ms": round(g, 4), "ratio": round(a / g, 3),
                "within_10pct": abs(a / g - 1) <= 0.10, "agent_rounds_ms": [round(x, 4) for x in ours],
                "litert_benchmark_rounds_ms": google, "size_bytes": model.stat().st_size,
            }
    print(json.dumps({
        "benchmark": "profiler_agreement", "runtime": f"ai-edge-litert {version} (side venv), CPU",
        "threads": args.threads, "rounds": args.rounds, "pinned": " ".join(PIN) or None, "models": results,
        "all_within_10pct": all(r["within_10pct"] for r in results.values()),
        "note": "litert-benchmark prints ms with 2 decimals; ratios are from one run on a shared 2-core machine",
        "seconds": round(time.time() - started, 1),
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
