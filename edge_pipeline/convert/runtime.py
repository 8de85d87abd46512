"""TFLite interpreters in this process: pick a runtime, run batches with (de)quantization."""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ..artifacts import LIMIT_TFLITE, check_regular_file
from ..errors import UserError

RUNTIMES = ("ai-edge-litert", "tflite-runtime", "tensorflow")


def interpreter_class(preferred: str | None = None):
    """(name, version, Interpreter class), preferring ai-edge-litert, then tflite-runtime, then tf.lite."""
    order = [preferred] if preferred else list(RUNTIMES)
    for name in order:
        try:
            if name == "ai-edge-litert":
                from ai_edge_litert import interpreter as mod
            elif name == "tflite-runtime":
                from tflite_runtime import interpreter as mod
            else:
                import tensorflow as tf

                return name, tf.__version__, tf.lite.Interpreter
        except ImportError:
            continue
        from importlib import metadata

        return name, metadata.version(name), mod.Interpreter
    raise UserError(f"no TFLite runtime found (tried {', '.join(order)}); pip install ai-edge-litert")


def load_interpreter(path: str | Path, threads: int = 1, preserve_all_tensors: bool = False):
    """An allocated interpreter. With `preserve_all_tensors`, every intermediate tensor stays readable
    after `invoke` (for per-layer diagnosis); the default XNNPACK delegate is then left out, since
    it computes delegated ops inside its own buffers."""
    check_regular_file(path, LIMIT_TFLITE, "TFLite model")  # the runtime would read a device or FIFO forever
    name, _, cls = interpreter_class()
    kwargs: dict = {"model_path": str(path), "num_threads": threads}
    if preserve_all_tensors:
        kwargs["experimental_preserve_all_tensors"] = True
        kwargs["experimental_op_resolver_type"] = _op_resolver_types(name).BUILTIN_WITHOUT_DEFAULT_DELEGATES
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "preserve_all_tensors is intended for debugging"
            interpreter = cls(**kwargs)
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise UserError(f"{path}: not a loadable TFLite model ({load_error_summary(str(exc))})") from None
    return interpreter


def _op_resolver_types(runtime: str):
    if runtime == "ai-edge-litert":
        from ai_edge_litert.interpreter import OpResolverType
    elif runtime == "tflite-runtime":
        from tflite_runtime.interpreter import OpResolverType
    else:
        import tensorflow as tf

        OpResolverType = tf.lite.experimental.OpResolverType
    return OpResolverType


def load_error_summary(text: str) -> str:
    """The informative line of an interpreter load/prepare error (they span several lines)."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip() and line.strip() != "Registration failed."]
    return " ".join(lines)[:300] if lines else "unknown error"


def tensor_value(interpreter, detail: dict) -> np.ndarray:
    """A tensor's current value as float32 (dequantized with its own per-tensor/per-axis parameters)."""
    value = interpreter.get_tensor(detail["index"])
    if value.dtype in (np.float32, np.float16, np.float64):
        return value.astype(np.float32)
    params = detail.get("quantization_parameters") or {}
    scales = np.asarray(params.get("scales", []), np.float32)
    zeros = np.asarray(params.get("zero_points", []), np.float32)
    if scales.size == 0:
        return value.astype(np.float32)
    if scales.size == 1:
        return (value.astype(np.float32) - zeros.reshape(())) * scales.reshape(())
    shape = [1] * value.ndim
    shape[params.get("quantized_dimension", 0)] = scales.size
    return (value.astype(np.float32) - zeros.reshape(shape)) * scales.reshape(shape)


def quantize_input(x: np.ndarray, detail: dict) -> np.ndarray:
    dtype = detail["dtype"]
    if dtype in (np.float32, np.float16):
        return x.astype(dtype)
    scale, zero = detail["quantization"]
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale + zero), info.min, info.max).astype(dtype)


def dequantize_output(y: np.ndarray, detail: dict) -> np.ndarray:
    if detail["dtype"] in (np.float32, np.float16):
        return y.astype(np.float32)
    scale, zero = detail["quantization"]
    return (y.astype(np.float32) - zero) * scale


def run_tflite(interpreter, batches_nhwc: Iterable[np.ndarray]) -> np.ndarray:
    """Float logits for every sample (the model has a static batch of 1, so samples go one by one)."""
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]
    results = []
    for batch in batches_nhwc:
        for sample in batch:
            interpreter.set_tensor(inp["index"], quantize_input(sample[None], inp))
            interpreter.invoke()
            results.append(dequantize_output(interpreter.get_tensor(out["index"]), out)[0])
    return np.stack(results)


def median_latency_ms(path: str | Path, runs: int = 200, threads: int = 1) -> float:
    """Median in-process invoke time (default delegates, as deployed): a quick relative measure for
    comparing two variants of one model side by side. Device numbers come from the profile stage."""
    import time

    interpreter = load_interpreter(path, threads)
    detail = interpreter.get_input_details()[0]
    x = np.random.default_rng(0).standard_normal(detail["shape"]).astype(np.float32)
    interpreter.set_tensor(detail["index"], quantize_input(x, detail))
    for _ in range(max(3, runs // 20)):
        interpreter.invoke()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        interpreter.invoke()
        times.append((time.perf_counter() - started) * 1000.0)
    return float(np.median(times))
