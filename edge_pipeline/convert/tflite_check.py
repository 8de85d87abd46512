"""Structural validation of a parsed .tflite flatbuffer (a `ModelT`), before anything indexes into it.

A flatbuffer that parses can still hold any integer where an index belongs: an operator's opcode
index, a tensor index, a tensor's buffer, a subgraph named by a control-flow op or a signature.
Python would raise IndexError on a large one and silently wrap a negative one, so every index is
checked here, once, and a bad file is one `UserError` ("not a valid TFLite file: ...") naming it.
Constant data is checked against its tensor's shape and type, since diagnosis reshapes it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from ..errors import UserError

MAX_RANK = 16
MAX_DIM = 2**31 - 1
# Bytes per element of the fixed-size tensor types (TensorType names); others (strings, int4
# packing, resources, variants) are not checked against their data size.
ELEMENT_BYTES = {"FLOAT32": 4, "FLOAT16": 2, "INT32": 4, "UINT8": 1, "INT64": 8, "BOOL": 1, "INT16": 2,
                 "INT8": 1, "FLOAT64": 8, "UINT64": 8, "UINT32": 4, "UINT16": 2, "BFLOAT16": 2}


class InvalidModel(ValueError):
    """One structural problem, as a phrase (`subgraph 0 operator 3: opcode index 99 of 12`)."""


def check_model_structure(model: Any, file_size: int, label: str, type_names: dict[int, str]) -> None:
    """Raise a UserError naming `label` at the first index out of range or inconsistent tensor."""
    try:
        _check_model(model, file_size, type_names)
    except InvalidModel as exc:
        raise UserError(f"{label}: not a valid TFLite file: {exc}; the file is corrupt or was edited, re-export "
                        "the model") from None


def _check_model(model: Any, file_size: int, type_names: dict[int, str]) -> None:
    subgraphs = model.subgraphs or []
    buffers = model.buffers or []
    opcodes = len(model.operatorCodes or [])
    for index, buffer in enumerate(buffers):
        _check_buffer_range(buffer, index, file_size)
    for where, value in _metadata_buffers(model):
        _index(value, len(buffers), where, "buffer")
    for s, subgraph in enumerate(subgraphs):
        tensors = subgraph.tensors or []
        for t, tensor in enumerate(tensors):
            _check_tensor(tensor, f"subgraph {s} tensor {t}", buffers, type_names)
        for kind in ("inputs", "outputs"):
            for value in _ints(getattr(subgraph, kind)):
                _index(value, len(tensors), f"subgraph {s} {kind}", "tensor")
        for o, op in enumerate(subgraph.operators or []):
            where = f"subgraph {s} operator {o}"
            _index(op.opcodeIndex, opcodes, where, "opcode")
            for value in _ints(op.inputs):
                if value != -1:  # -1: an optional input left out
                    _index(value, len(tensors), f"{where} inputs", "tensor")
            for kind in ("outputs", "intermediates"):
                for value in _ints(getattr(op, kind)):
                    _index(value, len(tensors), f"{where} {kind}", "tensor")
            for name, value in _subgraph_references(op):
                _index(value, len(subgraphs), f"{where} {name}", "subgraph")
    for g, signature in enumerate(model.signatureDefs or []):
        _index(signature.subgraphIndex, len(subgraphs), f"signature {g}", "subgraph")
        tensors = subgraphs[signature.subgraphIndex].tensors or []
        for kind in ("inputs", "outputs"):
            for entry in getattr(signature, kind) or []:
                _index(entry.tensorIndex, len(tensors), f"signature {g} {kind}", "tensor")


def _index(value: Any, count: int, where: str, what: str) -> None:
    if not isinstance(value, (int, np.integer)) or not 0 <= int(value) < count:
        raise InvalidModel(f"{where}: {what} index {value} out of range (the model has {count} {what}s)")


def _ints(values: Any) -> list[int]:
    return [] if values is None else [int(v) for v in values]


def _check_buffer_range(buffer: Any, index: int, file_size: int) -> None:
    """Buffers of models over 2 GB live after the flatbuffer, at `offset` (0 and 1 mean: not used)."""
    offset, size = int(buffer.offset or 0), int(buffer.size or 0)
    if offset > 1 and (size < 0 or offset + size > file_size):
        raise InvalidModel(f"buffer {index}: bytes {offset}..{offset + size} lie outside the {file_size}-byte file")


def _metadata_buffers(model: Any) -> Iterator[tuple[str, int]]:
    for value in _ints(model.metadataBuffer):
        yield "metadata_buffer", value
    for m, meta in enumerate(model.metadata or []):
        yield f"metadata {m}", meta.buffer


def _check_tensor(tensor: Any, where: str, buffers: list, type_names: dict[int, str]) -> None:
    _index(tensor.buffer, len(buffers), where, "buffer")
    shape = _ints(tensor.shape)
    if len(shape) > MAX_RANK or any(not -1 <= d <= MAX_DIM for d in shape):
        raise InvalidModel(f"{where}: shape {shape[:MAX_RANK + 1]} is not a tensor shape")
    _check_quantization(tensor.quantization, shape, where)
    data = buffers[tensor.buffer].data
    element = ELEMENT_BYTES.get(type_names.get(tensor.type, ""))
    if data is not None and len(data) and element and tensor.sparsity is None and -1 not in shape:
        expected = int(np.prod(shape, dtype=np.int64)) * element if shape else element
        if len(data) != expected:
            raise InvalidModel(f"{where}: {len(data)} bytes of constant data for shape {shape} "
                               f"({type_names.get(tensor.type)}, {expected} bytes)")


def _check_quantization(q: Any, shape: list[int], where: str) -> None:
    if q is None or q.scale is None:
        return
    scales = len(q.scale)
    zero_points = 0 if q.zeroPoint is None else len(q.zeroPoint)
    if zero_points not in (0, 1, scales):
        raise InvalidModel(f"{where}: {scales} quantization scales but {zero_points} zero points")
    if scales > 1:
        axis = int(q.quantizedDimension)
        if not 0 <= axis < len(shape) or shape[axis] != scales:
            raise InvalidModel(f"{where}: {scales} per-channel scales along axis {axis} of shape {shape}")


def _subgraph_references(op: Any) -> Iterator[tuple[str, int]]:
    """Subgraph indices in an op's options (IF, WHILE, CALL_ONCE, StableHLO ops...), by field name."""
    for options in (op.builtinOptions, getattr(op, "builtinOptions2", None)):
        for name, value in vars(options).items() if options is not None else ():
            if "subgraph" not in name.lower():
                continue
            if isinstance(value, (list, np.ndarray)):
                for item in value:
                    yield name, item
            elif value is not None:
                yield name, value
