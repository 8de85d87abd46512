"""TFLite interpreters in this process: pick a runtime, run batches with (de)quantization."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np

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
                from tflite_runtime import interpreter as mod  # type: ignore[import-not-found]
            else:
                import tensorflow as tf

                return name, tf.__version__, tf.lite.Interpreter
        except ImportError:
            continue
        from importlib import metadata

        return name, metadata.version(name), mod.Interpreter
    raise UserError(f"no TFLite runtime found (tried {', '.join(order)}); pip install ai-edge-litert")


def load_interpreter(path: str | Path, threads: int = 1):
    _, _, cls = interpreter_class()
    try:
        interpreter = cls(model_path=str(path), num_threads=threads)
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise UserError(f"{path}: not a loadable TFLite model ({str(exc).strip().splitlines()[0][:200]})") from None
    return interpreter


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
