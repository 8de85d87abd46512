"""Operator signatures: what a TFLite kernel's speed depends on, as a hashable, readable key.

A signature names the op, every input and output tensor (shape, dtype, constant or not, per-tensor or
per-channel quantization, and the values of small integer constants such as PAD's paddings or
RESHAPE's shape) and the op's builtin options (padding, strides, fused activation, ...). Two ops with
the same signature run the same kernel on the same amount of data, so one measurement serves both:
the device's latency table is keyed by `OpSig.key()`.

Signatures come from a .tflite file (`signatures_of_file`) or are built from a torch model's layer
shapes (`torch_ops`); both must produce the same key for the same op, which is why options are
recorded as *every* field of the schema's options object (`options_of`), defaults included.

A *unit* is what is timed as one table entry: one op, or a PAD and the conv it feeds. XNNPACK fuses
such a PAD into the convolution's own padding, so inside a model it costs nothing, while timed alone
it copies the whole tensor (measured: 0.53 of 1.64 predicted ms of a pruned mobilenet_v2 were PADs
timed alone). Timing the pair captures whichever the device's runtime does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Integer constants this small are operands that change what the kernel does (paddings, a shape,
# axes, a permutation), not weights: their values belong to the signature.
SMALL_INT_CONSTANT = 16


@dataclass(frozen=True)
class TensorSig:
    shape: tuple[int, ...]
    dtype: str  # float32, int8, int32, ...
    const: bool = False
    quant: str = ""  # "" (not quantized), "pt" (one scale), "pc" (one scale per channel)
    values: tuple[int, ...] | None = None  # small integer constants only

    def text(self) -> str:
        shape = "x".join(str(s) for s in self.shape) or "scalar"
        parts = [("c" if self.const else "") + shape, self.dtype]
        if self.quant:
            parts.append(self.quant)
        if self.values is not None:
            parts.append("=" + ",".join(str(v) for v in self.values))
        return ":".join(parts)


ABSENT = TensorSig((), "none")  # an optional input the op does not use (index -1)


@dataclass(frozen=True)
class OpSig:
    op: str  # builtin name, e.g. CONV_2D
    inputs: tuple[TensorSig, ...]
    outputs: tuple[TensorSig, ...]
    options: tuple[tuple[str, Any], ...] = ()  # sorted (field, value) of the builtin options object
    options_type: str = ""  # the schema's options class, e.g. Conv2DOptions ("" when the op has none)

    def key(self) -> str:
        ins = ", ".join(t.text() for t in self.inputs)
        outs = ", ".join(t.text() for t in self.outputs)
        opts = " ".join(f"{k}={_value_text(v)}" for k, v in self.options)
        return f"{self.op}({ins} -> {outs}){'; ' + opts if opts else ''}"

    def with_shapes(self, inputs: tuple[TensorSig, ...], outputs: tuple[TensorSig, ...]) -> OpSig:
        return OpSig(self.op, inputs, outputs, self.options, self.options_type)


def _value_text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_value_text(v) for v in value) + "]"
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def _plain(value: Any) -> Any:
    """Options values as hashable plain data (numpy arrays and lists become tuples)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    try:
        return tuple(_plain(v) for v in value)
    except TypeError:
        return str(value)


def options_of(options_obj: Any) -> tuple[tuple[str, Any], ...]:
    """Every field of a schema options object (`Conv2DOptionsT`, ...), sorted, None fields dropped."""
    if options_obj is None:
        return ()
    return tuple(sorted((k, _plain(v)) for k, v in vars(options_obj).items() if v is not None))


def options_type_name(options_obj: Any) -> str:
    return type(options_obj).__name__.removesuffix("T") if options_obj is not None else ""


def tensor_sig(graph, index: int) -> TensorSig:
    """The signature of tensor `index` of a `convert.inspect.Graph`."""
    if index < 0:
        return ABSENT
    t = graph.tensors[index]
    quant = "" if not t.scales else ("pc" if len(t.scales) > 1 else "pt")
    values = None
    if t.constant and t.dtype in ("int32", "int64") and 0 < _elements(t.shape) <= SMALL_INT_CONSTANT and not t.scales:
        values = tuple(int(v) for v in graph.constant(index).reshape(-1))
    return TensorSig(tuple(int(s) for s in t.shape), t.dtype, t.constant, quant, values)


def _elements(shape) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


def signatures(graph) -> list[OpSig]:
    """One signature per op of subgraph 0, in execution order."""
    raw_ops = graph.model.subgraphs[0].operators or []
    out = []
    for op, raw in zip(graph.ops, raw_ops):
        out.append(OpSig(
            op.name, tuple(tensor_sig(graph, i) for i in op.inputs), tuple(tensor_sig(graph, i) for i in op.outputs),
            options_of(raw.builtinOptions), options_type_name(raw.builtinOptions),
        ))
    return out


def signatures_of_file(path: str | Path) -> list[OpSig]:
    from ..convert.inspect import read_graph

    return signatures(read_graph(path))


Unit = tuple[OpSig, ...]  # ops run in a chain: each op's first input is the previous op's output

# producer op -> consumers it is timed together with (when it feeds only that consumer)
TIMED_WITH_CONSUMER = {"PAD": ("CONV_2D", "DEPTHWISE_CONV_2D")}


def unit_key(unit: Unit) -> str:
    return " >> ".join(sig.key() for sig in unit)


def units(graph, sigs: list[OpSig] | None = None) -> list[tuple[tuple[int, ...], Unit]]:
    """The ops of subgraph 0 grouped into timing units, in execution order: (op indices, unit)."""
    sigs = sigs if sigs is not None else signatures(graph)
    consumers = graph.consumers()
    outputs = set(graph.outputs)
    out: list[tuple[tuple[int, ...], Unit]] = []
    taken: set[int] = set()
    for i, op in enumerate(graph.ops):
        if i in taken:
            continue
        partners = TIMED_WITH_CONSUMER.get(op.name)
        if partners and len(op.outputs) == 1 and op.outputs[0] not in outputs:
            users = consumers.get(op.outputs[0], [])
            if len(users) == 1 and users[0].name in partners and users[0].inputs[:1] == op.outputs:
                j = users[0].index
                out.append(((i, j), (sigs[i], sigs[j])))
                taken.add(j)
                continue
        out.append(((i,), (sigs[i],)))
    return out
