"""Drive the conversion worker: offline, in a subprocess, with progress and a clear failure line."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from .. import procs
from ..artifacts import LIMIT_ONNX, LIMIT_TEXT, check_regular_file, read_json
from ..errors import PipelineError, UserError
from ..ui import console
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


# Caller variables the worker keeps: they change how fast it runs or whether Python starts at all,
# never the converted graph. EDGE_PIPELINE_* are this tool's own settings.
PASSED_THROUGH = ("LD_LIBRARY_PATH", "OMP_NUM_THREADS")
OWN_PREFIX = "EDGE_PIPELINE_"


def worker_env(work_dir: str | os.PathLike) -> dict[str, str]:
    """The converter's whole environment, built from scratch rather than copied from the caller.

    The same ONNX file must give the same TFLite files however the tool was started: with an
    activated virtualenv, its `bin/` on PATH let onnx2tf find the optional `onnxsim` command, which
    rewrote the model (undoing our max-pool rewrite). So: system PATH only, no PYTHONPATH but ours,
    no user site-packages, a fixed hash seed and locale, no GPU, HOME and TMPDIR inside the work
    folder (removed with it), and proxies that make any network access fail at once."""
    work_dir = str(work_dir)
    blackhole = "http://127.0.0.1:9"  # discard port: anything that tries the network fails at once
    # The worker imports this package by name: make sure it finds the same copy as the parent.
    package_root = str(Path(__file__).resolve().parents[2])
    env = {
        "PATH": os.defpath, "HOME": work_dir, "TMPDIR": work_dir, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
        "PYTHONPATH": package_root, "PYTHONNOUSERSITE": "1", "PYTHONHASHSEED": "0", "PYTHONWARNINGS": "ignore",
        "PYTHONDONTWRITEBYTECODE": "1",
        "TF_CPP_MIN_LOG_LEVEL": "2", "TF_ENABLE_ONEDNN_OPTS": "0", "CUDA_VISIBLE_DEVICES": "",
        "HTTP_PROXY": blackhole, "HTTPS_PROXY": blackhole, "http_proxy": blackhole, "https_proxy": blackhole,
        "NO_PROXY": "", "no_proxy": "",
    }
    for name, value in os.environ.items():
        if name in PASSED_THROUGH or name.startswith(OWN_PREFIX):
            env[name] = value
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
    **options: Any,
) -> Conversion:
    """Convert `onnx_path` into `out_dir/model_<precision>.tflite` for each precision, in the worker
    (see `conversion_started` for the options)."""
    with conversion_started(onnx_path, out_dir, precisions, sample_images01, calibration_nhwc, **options) as pending:
        return pending.result()


@contextmanager
def conversion_started(
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
) -> Iterator[PendingConversion]:
    """Start the conversion worker and return at once: the caller does other work (the worker spends
    its first ~15 s importing TensorFlow on its own core), then calls `.result()`. Leaving the block
    without a result stops the worker; its temp folder goes either way.

    `keep_float` (layer globs) and `auto_keep_float` (N worst layers) make the int8 file a mixed
    model; the plain int8 one is kept as `model_int8_full.tflite` for comparison."""
    if any(p in NEEDS_CALIBRATION for p in precisions) and calibration_nhwc is None:
        raise PipelineError("export: int8/int16x8 need calibration data; add a `quantize` stage before `export`")
    check_regular_file(onnx_path, LIMIT_ONNX, "ONNX model")
    out_dir.mkdir(parents=True, exist_ok=True)
    with procs.temp_dir("convert") as work_dir:
        np.save(work_dir / ONNX2TF_SAMPLE_FILE, onnx2tf_sample_images(sample_images01))
        calibration_file = work_dir / "calibration.npy"
        if calibration_nhwc is not None:
            np.save(calibration_file, calibration_nhwc.astype(np.float32))
        # onnx2tf rewrites the file it is given (op names, shape inference): give it a private copy,
        # so the exported model.onnx stays exactly what we checked against torch.
        private_onnx = work_dir / "onnx" / onnx_path.name
        private_onnx.parent.mkdir()
        shutil.copyfile(onnx_path, private_onnx)
        spec = {
            "onnx": str(private_onnx), "workdir": str(work_dir), "out_dir": str(out_dir.resolve()),
            "precisions": precisions, "calibration": str(calibration_file), "io_type": io_type,
            "per_channel": per_channel, "keep_float": list(keep_float or []), "auto_keep_float": int(auto_keep_float),
            "diagnose_samples": int(diagnose_samples), "result": str(work_dir / "result.json"),
        }
        (work_dir / "spec.json").write_text(json.dumps(spec))
        with worker_started(WORKER + [str(work_dir / "spec.json")], work_dir, log_path or out_dir / "convert.log",
                            timeout) as worker:
            yield PendingConversion(worker, work_dir / "result.json", out_dir)


class PendingConversion:
    """A running conversion; `result()` waits for it (progress on the terminal) and reads its result."""

    def __init__(self, worker: RunningWorker, result_path: Path, out_dir: Path) -> None:
        self.worker = worker
        self.result_path = result_path
        self.out_dir = out_dir

    def result(self, on_file: Callable[[str, Path], None] | None = None) -> Conversion:
        """Wait for the worker. `on_file(precision, path)` runs as soon as a file is final, while the
        worker goes on with the next precision (float32 is evaluated while int8 calibrates); an
        exception from it stops the worker."""
        def announced(precision: str) -> None:
            if on_file is not None:
                on_file(precision, self.out_dir / f"model_{precision}.tflite")

        self.worker.wait(on_file=announced)
        result = read_json(self.result_path)
        selective = result.get("selective")
        if selective:
            selective["full_int8"] = Path(selective["full_int8"])
        return Conversion({p: Path(f) for p, f in result["files"].items()}, result["seconds"], selective,
                          result["failed"], result["float_fallback"])


def run_worker(cmd: list[str], work_dir: Path, log_path: Path, timeout: float) -> None:
    """Run a worker command (in `work_dir`, with `worker_env`) to its end; see `RunningWorker.wait`."""
    with worker_started(cmd, work_dir, log_path, timeout) as worker:
        worker.wait()


@contextmanager
def worker_started(cmd: list[str], work_dir: Path, log_path: Path, timeout: float) -> Iterator[RunningWorker]:
    """A worker command started in `work_dir` with `worker_env`, its stderr going to `log_path`. It
    and anything it starts die with us, and are stopped when the block is left before `wait()` ends."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with (_new_log(log_path) as log,
          procs.spawned(cmd, cwd=work_dir, env=worker_env(work_dir), stdout=procs.PIPE, stderr=log) as proc):
        yield RunningWorker(proc, log, log_path, time.monotonic() + timeout, timeout)


@dataclass
class RunningWorker:
    proc: subprocess.Popen
    log: IO[str]
    log_path: Path
    deadline: float  # time.monotonic() at which the worker is stopped
    timeout: float

    def wait(self, on_file: Callable[[str], None] | None = None) -> None:
        """Follow the worker to its end: its stdout protocol lines drive progress (and `on_file` for
        each finished precision), everything else goes to the log. Raises UserError (bad input found
        by the worker) or PipelineError (the conversion failed, crashed or ran past its deadline)."""
        last_step, error, timed_out = None, None, False
        spinner = console.status("converting", spinner="dots")
        spinner.start()
        try:
            try:
                for line in procs.stream_lines(self.proc, max(0.0, self.deadline - time.monotonic())):
                    if line.startswith("@@step "):
                        last_step = line.split(" ", 1)[1].strip()
                        if last_step != "done":
                            console.print(f"  converting: {last_step}")
                    elif line.startswith("@@file "):
                        if on_file is not None:
                            spinner.stop()  # the callback may show its own progress bar
                            on_file(line.split(" ", 1)[1].strip())
                            spinner.start()
                    elif line.startswith("@@error "):
                        try:
                            error = json.loads(line.split(" ", 1)[1])
                        except ValueError:
                            error = {"kind": "conversion", "message": line.split(" ", 1)[1].strip()}
                    else:
                        self.log.write(line)
            except subprocess.TimeoutExpired:
                timed_out = True
                procs.stop(self.proc)
            code = procs.finish(self.proc)
        finally:
            spinner.stop()
        self.log.flush()
        if timed_out:
            raise PipelineError(f"export: conversion took longer than {self.timeout:.0f}s and was stopped during "
                                f"{last_step}; see {self.log_path}")
        if code == 0:
            return
        if code == INPUT_ERROR_EXIT and error and error.get("kind") == "input":
            raise UserError(f"export: {error['message']}")
        raise PipelineError(f"export: conversion failed: {describe_failure(log_tail(self.log_path), code, last_step, error)}; "
                            f"full log: {self.log_path}")


@contextmanager
def _new_log(path: Path) -> Iterator[IO[str]]:
    """A fresh log file; a symlink planted in its place is refused, never followed and truncated."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise PipelineError(f"{path}: cannot write the conversion log ({exc.strerror}); remove whatever is there") from None
    with os.fdopen(fd, "w") as log:
        yield log


def log_tail(path: Path, limit: int = LIMIT_TEXT) -> str:
    """The last `limit` bytes of a log (the failure is at the end; a runaway log stays readable)."""
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        fh.seek(max(0, size - limit))
        return fh.read(limit).decode("utf-8", errors="replace")


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
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        exceptions = [line for line in lines if _EXCEPTION_LINE.match(line)]
        # onnx2tf's own ERROR lines: the first one states the problem, the rest are generic advice.
        errors = [line for line in lines if line.startswith("ERROR:") and not any(b in line for b in _ONNX2TF_ADVICE)]
        detail = exceptions[-1] if exceptions else errors[0] if errors else (lines or [""])[-1]
        if detail:
            parts.append(detail[:300])
    return ": ".join(parts)
