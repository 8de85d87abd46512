"""Drive the conversion worker: offline, in a subprocess, with progress and a clear failure line."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from ..errors import PipelineError
from ..ui import console, status_line

# onnx2tf looks for this file in the working directory and downloads sample images if it is
# missing (DESIGN.md, "facts measured"): we write it from the recipe's own data.
ONNX2TF_SAMPLE_FILE = "calibration_image_sample_data_20x128x128x3_float32.npy"


def onnx2tf_sample_images(images_nhwc01: np.ndarray) -> np.ndarray:
    """20 images as onnx2tf expects them: 128x128x3, float32 in [0, 1]."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(images_nhwc01[:20])).permute(0, 3, 1, 2).float()
    if x.shape[1] == 1:
        x = x.repeat(1, 3, 1, 1)
    x = torch.nn.functional.interpolate(x[:, :3], size=(128, 128), mode="bilinear", align_corners=False)
    if len(x) < 20:
        x = x.repeat((20 + len(x) - 1) // len(x), 1, 1, 1)[:20]
    return x.clamp(0, 1).permute(0, 2, 3, 1).contiguous().numpy().astype(np.float32)


def worker_env() -> dict[str, str]:
    env = dict(os.environ)
    blackhole = "http://127.0.0.1:9"  # discard port: anything that tries the network fails at once
    env.update({
        "HTTP_PROXY": blackhole, "HTTPS_PROXY": blackhole, "http_proxy": blackhole, "https_proxy": blackhole,
        "NO_PROXY": "", "no_proxy": "", "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "",
        "PYTHONWARNINGS": "ignore",
    })
    return env


def convert_to_tflite(
    onnx_path: Path,
    out_dir: Path,
    precisions: list[str],
    sample_images01: np.ndarray,
    calibration_nhwc: np.ndarray | None,
    io_type: str = "int8",
    per_channel: bool = True,
    log_path: Path | None = None,
    timeout: float = 3600,
) -> dict[str, Path]:
    """Convert `onnx_path` into `out_dir/model_<precision>.tflite` for each precision."""
    out_dir.mkdir(parents=True, exist_ok=True)
    needs_calibration = any(p in ("int8", "int16x8") for p in precisions)
    if needs_calibration and calibration_nhwc is None:
        raise PipelineError("export: int8/int16x8 need calibration data; add a `quantize` stage before `export`")
    with tempfile.TemporaryDirectory(prefix="edge-pipeline-convert-") as work:
        work_dir = Path(work)
        np.save(work_dir / ONNX2TF_SAMPLE_FILE, onnx2tf_sample_images(sample_images01))
        calibration_file = work_dir / "calibration.npy"
        if calibration_nhwc is not None:
            np.save(calibration_file, calibration_nhwc.astype(np.float32))
        spec = {
            "onnx": str(onnx_path.resolve()), "workdir": str(work_dir), "out_dir": str(out_dir.resolve()),
            "precisions": precisions, "calibration": str(calibration_file), "io_type": io_type,
            "per_channel": per_channel, "result": str(work_dir / "result.json"),
        }
        (work_dir / "spec.json").write_text(json.dumps(spec))
        log_path = log_path or out_dir / "convert.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        code = _run_worker(work_dir, log_path, timeout)
        if code != 0:
            raise PipelineError(f"export: conversion failed: {diagnose_log(log_path.read_text(errors='replace'), code)}; full log: {log_path}")
        result = json.loads((work_dir / "result.json").read_text())
    return {p: Path(f) for p, f in result["files"].items()}


def _run_worker(work_dir: Path, log_path: Path, timeout: float) -> int:
    cmd = [sys.executable, "-m", "edge_pipeline.convert.tflite_worker", str(work_dir / "spec.json")]
    with open(log_path, "w") as log, status_line("converting"):
        proc = subprocess.Popen(cmd, cwd=work_dir, env=worker_env(), stdout=subprocess.PIPE, stderr=log, text=True)
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                if line.startswith("@@step "):
                    name = line.split(" ", 1)[1].strip()
                    if name != "done":
                        console.print(f"  converting: {name}")
                else:
                    log.write(line)
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise PipelineError(f"export: conversion took longer than {timeout:.0f}s and was stopped; see {log_path}") from None
        finally:
            if proc.poll() is None:
                proc.kill()


_OP_PATTERNS = (
    re.compile(r"onnx_op_type:\s*(\S+)\s+onnx_op_name:\s*(\S+)"),
    re.compile(r"'op':\s*'([^']+)'"),
)


def diagnose_log(text: str, code: int) -> str:
    """One line from a worker log: the failing ONNX op when onnx2tf names it, and the last error."""
    if code < 0:
        head = f"the converter process was killed by signal {-code}"
    else:
        head = f"the converter exited with code {code}"
    op = None
    for pattern in _OP_PATTERNS:
        matches = pattern.findall(text)
        if matches:
            op = matches[-1] if isinstance(matches[-1], str) else " ".join(matches[-1])
            break
    errors = [l.strip() for l in text.splitlines() if re.search(r"(Error|ERROR|Exception)\b", l)]
    last = errors[-1] if errors else (text.strip().splitlines() or [""])[-1]
    parts = [head]
    if op:
        parts.append(f"at ONNX op {op}")
    if last:
        parts.append(last[:300])
    return ": ".join(parts)
