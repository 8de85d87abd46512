"""Drive the conversion worker: offline, in a subprocess, with progress and a clear failure line."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import PipelineError, UserError
from ..ui import console, status_line
from .tflite_worker import INPUT_ERROR_EXIT

# onnx2tf looks for this file in the working directory and downloads sample images if it is
# missing (DESIGN.md, "facts measured"): we write it from the recipe's own data.
ONNX2TF_SAMPLE_FILE = "calibration_image_sample_data_20x128x128x3_float32.npy"
WORKER = [sys.executable, "-m", "edge_pipeline.convert.tflite_worker"]
NEEDS_CALIBRATION = ("int8", "int16x8")


@dataclass
class Conversion:
    files: dict[str, Path]
    seconds: dict[str, float]
    # keep_float facts: layers kept in float, denylisted tensors, the auto ranking, the full-int8 file.
    selective: dict[str, Any] | None = None
    failed: dict[str, str] = field(default_factory=dict)  # precision -> why the converter refused it
    float_fallback: dict[str, list[str]] = field(default_factory=dict)  # precision -> ops left in float


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
    # The worker imports this package by name: make sure it finds the same copy as the parent.
    package_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join([package_root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


def convert_to_tflite(onnx_path: Path, out_dir: Path, precisions: list[str], sample_images01: np.ndarray,
                      calibration_nhwc: np.ndarray | None, **options: Any) -> dict[str, Path]:
    """precision -> `out_dir/model_<precision>.tflite` (see `run_conversion` for the options); any
    precision the converter refuses is an error here."""
    conversion = run_conversion(onnx_path, out_dir, precisions, sample_images01, calibration_nhwc, **options)
    if conversion.failed:
        raise PipelineError("export: " + "; ".join(f"{p} could not be converted: {m}" for p, m in conversion.failed.items()))
    return conversion.files


def run_conversion(
    onnx_path: Path,
    out_dir: Path,
    precisions: list[str],
    sample_images01: np.ndarray,
    calibration_nhwc: np.ndarray | None,
    io_type: str = "int8",
    per_channel: bool = True,
    keep_float: list[str] | None = None,
    auto_keep_float: int = 0,
    diagnose_samples: int = 32,
    log_path: Path | None = None,
    timeout: float = 3600,
) -> Conversion:
    """Convert `onnx_path` into `out_dir/model_<precision>.tflite` for each precision, in the worker.

    `keep_float` (layer globs) and `auto_keep_float` (N worst layers) make the int8 file a mixed
    model; the plain int8 one is kept as `model_int8_full.tflite` for comparison."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if any(p in NEEDS_CALIBRATION for p in precisions) and calibration_nhwc is None:
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
            "per_channel": per_channel, "keep_float": list(keep_float or []), "auto_keep_float": int(auto_keep_float),
            "diagnose_samples": int(diagnose_samples), "result": str(work_dir / "result.json"),
        }
        (work_dir / "spec.json").write_text(json.dumps(spec))
        log_path = log_path or out_dir / "convert.log"
        run_worker(WORKER + [str(work_dir / "spec.json")], work_dir, log_path, timeout)
        result = json.loads((work_dir / "result.json").read_text())
    selective = result.get("selective")
    if selective:
        selective["full_int8"] = Path(selective["full_int8"])
    return Conversion({p: Path(f) for p, f in result["files"].items()}, result["seconds"], selective,
                      result["failed"], result["float_fallback"])


def run_worker(cmd: list[str], work_dir: Path, log_path: Path, timeout: float) -> None:
    """Run a worker command; its stdout protocol lines drive progress, everything else goes to the log.
    Raises UserError (bad input found by the worker) or PipelineError (the conversion failed or crashed)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    last_step, error = None, None
    with open(log_path, "w") as log, status_line("converting"):
        proc = subprocess.Popen(cmd, cwd=work_dir, env=worker_env(), stdout=subprocess.PIPE, stderr=log, text=True)
        # Reading stdout blocks until the worker exits, so the time limit is a timer that kills it.
        timed_out = threading.Event()

        def stop() -> None:
            timed_out.set()
            proc.kill()

        timer = threading.Timer(timeout, stop)
        timer.start()
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                if line.startswith("@@step "):
                    last_step = line.split(" ", 1)[1].strip()
                    if last_step != "done":
                        console.print(f"  converting: {last_step}")
                elif line.startswith("@@error "):
                    try:
                        error = json.loads(line.split(" ", 1)[1])
                    except ValueError:
                        error = {"kind": "conversion", "message": line.split(" ", 1)[1].strip()}
                else:
                    log.write(line)
            code = proc.wait()
        finally:
            timer.cancel()
            if proc.poll() is None:
                proc.kill()
    if timed_out.is_set():
        raise PipelineError(f"export: conversion took longer than {timeout:.0f}s and was stopped during {last_step}; see {log_path}")
    if code == 0:
        return
    if code == INPUT_ERROR_EXIT and error and error.get("kind") == "input":
        raise UserError(f"export: {error['message']}")
    text = log_path.read_text(errors="replace")
    raise PipelineError(f"export: conversion failed: {describe_failure(text, code, last_step, error)}; full log: {log_path}")


ANSI = re.compile(r"\x1b\[[0-9;]*m")
_OP_PATTERNS = (  # most specific first: onnx2tf's own failure lines, then its per-op info lines
    re.compile(r"(\S+) OP is not yet implemented"),
    re.compile(r"ERROR:\s*onnx_op_name:\s*(\S+)"),
    re.compile(r"onnx_op_type:\s*(\S+)\s+onnx_op_name:\s*(\S+)"),
    re.compile(r"'op':\s*'([^']+)'"),
)
_EXCEPTION_LINE = re.compile(r"^[\w.]*(Error|Exception)\b:")
_ONNX2TF_ADVICE = ("onnx_op_name", "The trace log", "Read this and deal", "Alternatively,", "If the input OP",
                   "Also, for models", "input_onnx_file_path", "Please convert again")


def describe_failure(text: str, code: int, last_step: str | None = None, error: dict | None = None) -> str:
    """One line from a failed worker: how it ended, in which phase, the failing ONNX op when onnx2tf
    names it, and the last error."""
    text = ANSI.sub("", text)
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        head = f"the converter process crashed ({name})"
    else:
        head = f"the converter exited with code {code}"
    if last_step and last_step != "done":
        head += f" during {last_step if last_step != 'onnx2tf' else 'onnx2tf (ONNX -> TensorFlow)'}"
    op = None
    for pattern in _OP_PATTERNS:
        matches = pattern.findall(text)
        if matches:
            op = matches[-1] if isinstance(matches[-1], str) else " ".join(matches[-1])
            break
    parts = [head]
    if op:
        parts.append(f"at ONNX op {op}")
    if error and error.get("message"):
        parts.append(f"{error.get('type', 'Error')}: {error['message']}")
    else:
        lines = [l.strip() for l in text.splitlines() if l.strip()]
        exceptions = [l for l in lines if _EXCEPTION_LINE.match(l)]
        # onnx2tf's own ERROR lines: the first one states the problem, the rest are generic advice.
        errors = [l for l in lines if l.startswith("ERROR:") and not any(b in l for b in _ONNX2TF_ADVICE)]
        detail = exceptions[-1] if exceptions else errors[0] if errors else (lines or [""])[-1]
        if detail:
            parts.append(detail[:300])
    return ": ".join(parts)
