"""Single-op TFLite models: what the latency table times on a device, one kernel at a time.

- `extract(model, i)`: op `i` (or a unit of ops, see `opsig.units`) of a real .tflite with its own
  weights, quantization and options (exact: the kernel the full model runs, whatever the op type);
- `generate(sig)`: the same from a signature (or a unit's chain of them) alone (a torch model's predicted ops, before any export),
  with deterministic random weights and quantization parameters the kernels accept (a conv's bias
  scale is input scale x filter scale, as TFLite checks);
- `empty_model()`: one trivial op, to measure what every invoke costs on its own.

All three are flatbuffers packed with the schema's object API: no TensorFlow, milliseconds each.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..convert.flatbuffer import schema, write_model
from .opsig import OpSig, TensorSig, Unit

ACTIVATION_SCALE = 0.05
WEIGHT_SCALE = 0.01
NUMPY_DTYPES = {"float32": np.float32, "float16": np.float16, "int8": np.int8, "uint8": np.uint8, "int16": np.int16,
                "int32": np.int32, "int64": np.int64, "bool": np.bool_}


class CannotGenerate(ValueError):
    """A signature the generator has no recipe for (e.g. an op without a builtin options class)."""


def _new_model(op_codes: list, tensors: list, buffers: list, ops: list, inputs: list[int], outputs: list[int]) -> bytes:
    s = schema()
    model = s.ModelT()
    model.version = 3
    model.description = b"edge-pipeline latency table op"
    model.operatorCodes = op_codes
    subgraph = s.SubGraphT()
    subgraph.tensors, subgraph.operators, subgraph.inputs, subgraph.outputs = tensors, ops, inputs, outputs
    subgraph.name = b"main"
    model.subgraphs = [subgraph]
    model.buffers = buffers
    return write_model(model)


def extract(model: Any, op_indices: int | Sequence[int]) -> bytes:
    """Ops `op_indices` of subgraph 0 of `model` (a ModelT) as a model of their own: constant inputs
    keep their buffers, inputs no chosen op produces become model inputs, outputs no chosen op
    consumes become model outputs."""
    s = schema()
    source = model.subgraphs[0]
    indices = [op_indices] if isinstance(op_indices, int) else list(op_indices)
    buffers: list = [s.BufferT()]  # buffer 0 is the empty sentinel every non-constant tensor points at
    tensors: list = []
    remap: dict[int, int] = {}

    def add(index: int) -> int:
        if index < 0:
            return -1
        if index not in remap:
            tensor = copy.copy(source.tensors[index])
            data = model.buffers[tensor.buffer].data if 0 < tensor.buffer < len(model.buffers) else None
            if data is not None and len(data):
                buffer = s.BufferT()
                buffer.data = data
                buffers.append(buffer)
                tensor.buffer = len(buffers) - 1
            else:
                tensor.buffer = 0
            remap[index] = len(tensors)
            tensors.append(tensor)
        return remap[index]

    codes: list = []
    ops = []
    produced: set[int] = set()
    consumed: set[int] = set()
    for i in indices:
        original = source.operators[i]
        op = copy.copy(original)
        op.inputs = [add(t) for t in (original.inputs if original.inputs is not None else [])]
        op.outputs = [add(t) for t in (original.outputs if original.outputs is not None else [])]
        op.intermediates = None
        code = model.operatorCodes[original.opcodeIndex]
        if code not in codes:
            codes.append(code)
        op.opcodeIndex = codes.index(code)
        consumed.update(t for t in op.inputs if t >= 0)
        produced.update(op.outputs)
        ops.append(op)
    graph_inputs = [t for t in dict.fromkeys(t for op in ops for t in op.inputs)
                    if t >= 0 and t not in produced and tensors[t].buffer == 0 and not getattr(tensors[t], "isVariable", False)]
    graph_outputs = [t for t in dict.fromkeys(t for op in ops for t in op.outputs) if t not in consumed]
    return _new_model([copy.copy(c) for c in codes], tensors, buffers, ops, graph_inputs, graph_outputs)


def _op_code(name: str, version: int = 1) -> Any:
    s = schema()
    code = s.OperatorCodeT()
    builtin = getattr(s.BuiltinOperator, name, None)
    if builtin is None:
        raise CannotGenerate(f"{name} is not a TFLite builtin op")
    code.builtinCode = builtin
    code.deprecatedBuiltinCode = min(builtin, 127)  # the schema's placeholder for codes above 127
    code.version = version
    return code


def _options(sig: OpSig) -> tuple[Any, int]:
    s = schema()
    if not sig.options_type:
        return None, 0
    cls = getattr(s, sig.options_type + "T", None)
    kind = getattr(s.BuiltinOptions, sig.options_type, None)
    if cls is None or kind is None:
        raise CannotGenerate(f"{sig.op}: no builtin options class {sig.options_type}")
    options = cls()
    for field, value in sig.options:
        setattr(options, field, list(value) if isinstance(value, tuple) else value)
    return options, kind


def _per_channel_axis(sig: OpSig, tensor: TensorSig) -> int:
    return 3 if sig.op == "DEPTHWISE_CONV_2D" and len(tensor.shape) == 4 else 0


def _values(tensor: TensorSig, rng: np.random.Generator) -> np.ndarray:
    shape = tensor.shape or (1,)
    dtype = NUMPY_DTYPES.get(tensor.dtype)
    if dtype is None:
        raise CannotGenerate(f"no data of type {tensor.dtype}")
    if tensor.values is not None:
        return np.asarray(tensor.values, dtype).reshape(shape)
    if np.issubdtype(dtype, np.floating):
        return (rng.standard_normal(shape) * 0.1).astype(dtype)
    if dtype == np.bool_:
        return rng.integers(0, 2, shape).astype(dtype)
    if tensor.dtype in ("int32", "int64"):  # a bias: small values
        return rng.integers(-256, 256, shape).astype(dtype)
    # Quantized weights are bell-shaped within their range, not uniform over it; emulators (qemu) run
    # saturating integer arithmetic slower, so the shape of the values shows in emulated timings.
    info = np.iinfo(np.dtype(dtype).name)
    return np.clip(np.round(rng.standard_normal(shape) * info.max / 4), max(info.min, -info.max), info.max).astype(dtype)


def generate(unit: OpSig | Unit, seed: int = 0) -> bytes:
    """A model running one op of signature `unit` (or a chain of them: each op's first input is the
    previous op's output): shapes, dtypes, quantization kinds, options and small constants as given;
    random weights."""
    s = schema()
    chain: Unit = (unit,) if isinstance(unit, OpSig) else tuple(unit)
    rng = np.random.default_rng(seed)
    type_of = {name.lower(): value for name, value in vars(s.TensorType).items() if not name.startswith("_")}
    buffers: list = [s.BufferT()]
    tensors: list = []

    def add(sig: OpSig, tensor: TensorSig, bias: bool = False) -> int:
        if tensor.dtype == "none":
            return -1
        if tensor.dtype not in type_of:
            raise CannotGenerate(f"{sig.op}: tensor type {tensor.dtype}")
        t = s.TensorT()
        t.shape = list(tensor.shape)
        t.type = type_of[tensor.dtype]
        t.name = f"t{len(tensors)}".encode()
        t.buffer = 0
        if tensor.quant:
            t.quantization = _quantization(sig, tensor, bias)
        if tensor.const:
            buffer = s.BufferT()
            buffer.data = np.frombuffer(_values(tensor, rng).tobytes(), np.uint8)
            buffers.append(buffer)
            t.buffer = len(buffers) - 1
        tensors.append(t)
        return len(tensors) - 1

    codes: list[str] = []
    ops, graph_inputs, previous = [], [], None
    for sig in chain:
        op_inputs = []
        for i, tensor in enumerate(sig.inputs):
            if i == 0 and previous is not None:
                op_inputs.append(previous)
                continue
            # A constant integer tensor after a quantized filter is the bias (scale = input x filter).
            is_bias = i == 2 and tensor.const and tensor.dtype in ("int32", "int64") and bool(tensor.quant)
            op_inputs.append(add(sig, tensor, bias=is_bias))
            if op_inputs[-1] >= 0 and not tensor.const:
                graph_inputs.append(op_inputs[-1])
        op = s.OperatorT()
        if sig.op not in codes:
            codes.append(sig.op)
        op.opcodeIndex = codes.index(sig.op)
        op.inputs, op.outputs = op_inputs, [add(sig, tensor) for tensor in sig.outputs]
        op.builtinOptions, op.builtinOptionsType = _options(sig)
        ops.append(op)
        previous = op.outputs[0] if op.outputs else None
    return _new_model([_op_code(name) for name in codes], tensors, buffers, ops, graph_inputs, list(ops[-1].outputs))


def _quantization(sig: OpSig, tensor: TensorSig, bias: bool) -> Any:
    q = schema().QuantizationParametersT()
    if tensor.quant == "pc":
        axis = _per_channel_axis(sig, tensor)
        n = tensor.shape[axis] if tensor.shape else 1
        scale = ACTIVATION_SCALE * WEIGHT_SCALE if bias else WEIGHT_SCALE
        q.scale, q.zeroPoint, q.quantizedDimension = [float(np.float32(scale))] * n, [0] * n, axis
    else:
        scale = ACTIVATION_SCALE * WEIGHT_SCALE if bias else (WEIGHT_SCALE if tensor.const else ACTIVATION_SCALE)
        q.scale, q.zeroPoint = [float(np.float32(scale))], [0]
    return q


EMPTY_SIG = OpSig("ADD", (TensorSig((1, 4), "float32"), TensorSig((1, 4), "float32")), (TensorSig((1, 4), "float32"),),
                  (("fusedActivationFunction", 0), ("potScaleInt16", True)), "AddOptions")


def empty_model() -> bytes:
    """The cheapest model there is: what one invoke costs with (almost) no work in it."""
    return generate(EMPTY_SIG)
