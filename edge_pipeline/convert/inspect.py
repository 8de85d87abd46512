"""Read a .tflite flatbuffer without a runtime: ops (+versions), tensors, quantization, sizes.

`read_graph` gives the operator graph as plain data (used by diagnosis and compatibility checks);
`inspect_tflite` summarizes it for people and scripts (`edge-pipeline inspect`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .flatbuffer import enum_names, read_model, schema

# Ops that only move values between integer and float: diagnosis looks through them.
CAST_OPS = ("QUANTIZE", "DEQUANTIZE")


@dataclass
class Tensor:
    index: int
    name: str
    shape: list[int]
    dtype: str
    buffer: int
    constant: bool
    bytes: int
    scales: list[float] = field(default_factory=list)
    zero_points: list[int] = field(default_factory=list)
    axis: int = 0


@dataclass
class Op:
    index: int
    name: str  # BUILTIN name (e.g. CONV_2D), or the custom code / Flex op name
    version: int
    inputs: list[int]
    outputs: list[int]


@dataclass
class Graph:
    """Subgraph 0 of a TFLite model (the one the interpreter runs)."""

    path: str
    size_bytes: int
    tensors: list[Tensor]
    ops: list[Op]
    inputs: list[int]
    outputs: list[int]
    subgraphs: int
    min_runtime_version: str | None
    model: Any = field(repr=False, default=None)  # the ModelT, for constant data

    def constant(self, index: int) -> np.ndarray | None:
        """A constant tensor's values as float32 (dequantized when it is integer); None if not constant."""
        t = self.tensors[index]
        if not t.constant:
            return None
        raw = np.asarray(self.model.buffers[t.buffer].data, dtype=np.uint8).tobytes()
        dtypes = {"float32": np.float32, "float16": np.float16, "int8": np.int8, "uint8": np.uint8,
                  "int16": np.int16, "int32": np.int32, "int64": np.int64}
        if t.dtype not in dtypes:
            return None
        values = np.frombuffer(raw, dtype=dtypes[t.dtype]).astype(np.float32)
        if t.scales and t.dtype not in ("float32", "float16"):
            shape = [1] * max(1, len(t.shape))
            if len(t.scales) > 1:
                shape[t.axis] = len(t.scales)
            values = values.reshape(t.shape or [-1])
            values = (values - np.asarray(t.zero_points, np.float32).reshape(shape)) * np.asarray(t.scales, np.float32).reshape(shape)
        return values.reshape(t.shape) if t.shape and int(np.prod(t.shape)) == values.size else values

    def producers(self) -> dict[int, Op]:
        return {o: op for op in self.ops for o in op.outputs}

    def consumers(self) -> dict[int, list[Op]]:
        out: dict[int, list[Op]] = {}
        for op in self.ops:
            for i in op.inputs:
                if i >= 0:
                    out.setdefault(i, []).append(op)
        return out


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def read_graph(path: str | Path | bytes, label: str | None = None) -> Graph:
    model = read_model(path, label)
    s = schema()
    op_names = enum_names(s.BuiltinOperator)
    type_names = enum_names(s.TensorType)
    codes = []
    for code in model.operatorCodes or []:
        builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
        name = op_names.get(builtin, f"BUILTIN_{builtin}")
        if name == "CUSTOM":
            name = _text(code.customCode)
        codes.append((name, int(code.version)))
    subgraph = model.subgraphs[0]
    buffers = model.buffers or []
    tensors = []
    for index, t in enumerate(subgraph.tensors or []):
        data = buffers[t.buffer].data if 0 < t.buffer < len(buffers) else None
        q = t.quantization
        tensors.append(Tensor(
            index=index, name=_text(t.name), shape=[int(s) for s in (t.shape if t.shape is not None else [])],
            dtype=type_names.get(t.type, str(t.type)).lower(), buffer=int(t.buffer),
            constant=data is not None and len(data) > 0, bytes=int(len(data)) if data is not None else 0,
            scales=[float(v) for v in (q.scale if q is not None and q.scale is not None else [])],
            zero_points=[int(v) for v in (q.zeroPoint if q is not None and q.zeroPoint is not None else [])],
            axis=int(q.quantizedDimension) if q is not None else 0,
        ))
    ops = []
    for index, op in enumerate(subgraph.operators or []):
        name, version = codes[op.opcodeIndex]
        ops.append(Op(index, name, version, [int(i) for i in (op.inputs if op.inputs is not None else [])],
                      [int(i) for i in (op.outputs if op.outputs is not None else [])]))
    min_runtime = None
    for meta in model.metadata or []:
        if _text(meta.name) == "min_runtime_version" and 0 <= meta.buffer < len(buffers):
            raw = buffers[meta.buffer].data
            text = bytes(np.asarray(raw, dtype=np.uint8)).split(b"\0")[0].decode(errors="replace") if raw is not None else ""
            min_runtime = text or min_runtime
    size = len(path) if isinstance(path, (bytes, bytearray)) else Path(path).stat().st_size
    return Graph(
        path=label or ("<buffer>" if isinstance(path, (bytes, bytearray)) else str(path)), size_bytes=size,
        tensors=tensors, ops=ops, inputs=[int(i) for i in subgraph.inputs], outputs=[int(i) for i in subgraph.outputs],
        subgraphs=len(model.subgraphs), min_runtime_version=min_runtime, model=model,
    )


def tensor_summary(t: Tensor) -> dict[str, Any]:
    info: dict[str, Any] = {"index": t.index, "name": t.name, "shape": t.shape, "dtype": t.dtype, "bytes": t.bytes}
    if t.scales:
        info["quantization"] = {
            "scales": len(t.scales),
            "scale": t.scales[0] if len(t.scales) == 1 else [min(t.scales), max(t.scales)],
            "zero_point": t.zero_points[0] if len(t.zero_points) == 1 else "per-channel",
            "axis": t.axis,
        }
    return info


ELEMENT_BYTES = {"float32": 4, "int32": 4, "float16": 2, "int16": 2, "int8": 1, "uint8": 1, "int64": 8, "bool": 1}


def activation_bytes(t: Tensor) -> int:
    return int(np.prod(t.shape or [1])) * ELEMENT_BYTES.get(t.dtype, 4)


def inspect_tflite(path: str | Path) -> dict[str, Any]:
    graph = read_graph(path)
    known = set(enum_names(schema().BuiltinOperator).values())
    counts = Counter(op.name for op in graph.ops)
    versions: dict[str, int] = {}
    for op in graph.ops:
        versions[op.name] = max(versions.get(op.name, 0), op.version)
    tensors = [tensor_summary(t) for t in graph.tensors]
    activations = [t for t in graph.tensors if not t.constant]
    dtypes = Counter(t.dtype for t in activations)
    weights = Counter(t.dtype for t in graph.tensors if t.constant)
    flex = sorted(name for name in counts if name.startswith("Flex"))
    largest = max(activations, key=activation_bytes, default=None)
    return {
        "file": str(path), "size_bytes": graph.size_bytes,
        "inputs": [tensors[i] for i in graph.inputs], "outputs": [tensors[i] for i in graph.outputs],
        "ops": dict(sorted(counts.items())), "op_versions": dict(sorted(versions.items())),
        "op_count": int(sum(counts.values())), "transposes": int(counts.get("TRANSPOSE", 0)),
        "flex_ops": flex, "custom_ops": sorted(n for n in counts if n not in known and not n.startswith("Flex")),
        "tensors": tensors, "weight_bytes": int(sum(t.bytes for t in graph.tensors)),
        "activation_dtypes": dict(sorted(dtypes.items())), "weight_dtypes": dict(sorted(weights.items())),
        "largest_activation": {"name": largest.name, "shape": largest.shape, "bytes": activation_bytes(largest)} if largest else None,
        "quantized_tensors": int(sum(1 for t in graph.tensors if t.scales)),
        "min_runtime_version": graph.min_runtime_version, "subgraphs": graph.subgraphs,
    }
