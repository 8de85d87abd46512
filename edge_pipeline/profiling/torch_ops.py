"""The TFLite ops edge-pipeline's export would write for a torch model, without exporting it.

The latency model prices a model before any export (pruning asks "what would these widths cost on
the device?"), so this module predicts the export's op signatures (`opsig.OpSig`) from the model's
layers: the model is traced with torch.fx (after the export's own flatten->Linear fold,
`convert.nhwc.fold_flatten_linear`), shapes are propagated, and each node is mapped the way the
export path (torch.onnx -> onnxsim -> our ONNX rewrites -> onnx2tf 1.29 -> TFLite converter) maps it.
What the files show, and this module reproduces (checked op for op against real exports in
tests/profiling/test_torch_ops.py):
- BatchNorm right after a conv is folded into it (torch.onnx); any other BatchNorm is MUL + ADD.
- ReLU / ReLU6 are fused into the op before them (CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED, ADD,
  MUL) when that op's output has no other user; otherwise they are RELU / RELU6 ops.
- Every conv has a bias (zeros if torch has none); a FULLY_CONNECTED's bias is absent when the Linear
  has none or it is all zeros (the converter drops a zero bias there, not on convs).
- Conv padding (onnx2tf's rule): symmetric pads and an output the size of the input -> SAME; other
  non-zero pads -> an explicit PAD op + VALID (e.g. every stride-2 3x3 conv with padding 1); none -> VALID.
- groups == in_channels -> DEPTHWISE_CONV_2D (depthMultiplier = out / in); other grouped convs stay
  one CONV_2D (filter in / groups deep), except where `convert.grouped_conv` splits them: TRANSPOSE to
  NCHW, per group STRIDED_SLICE + TRANSPOSE + CONV_2D, then CONCATENATION.
- A padded MaxPool after a ReLU is PAD (zeros, `convert.maxpool`) + MAX_POOL_2D VALID.
- Global average pooling -> MEAN over H, W (keepDims); the flatten before a Linear disappears (the
  FULLY_CONNECTED reads the 1x1xC map).
- Hardswish -> HARD_SWISH, except right after a Linear, where the converter folds onnx2tf's
  x * relu6(x + 3) / 6 into a second FULLY_CONNECTED (fused RELU6) and a MUL; Hardsigmoid after a
  conv -> RELU_0_TO_1 (its scale and offset folded into the conv).
- ChannelShuffle (`index_select` on channels) -> GATHER with int64 indices.
int8 (full-integer, int8 input/output, per-channel weights): activations and elementwise constants
"pt", conv / FC weights int8 "pc", biases int32 "pc"; index and shape operands stay plain ints.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from ..convert.flatbuffer import schema
from ..convert.grouped_conv import carries_nchw_shape, is_ambiguous_grouped_conv
from ..convert.nhwc import fold_flatten_linear
from ..fxpatterns import PASS_THROUGH, module_path
from .opsig import ABSENT, SMALL_INT_CONSTANT, OpSig, TensorSig, options_of, options_type_name

PRECISIONS = ("float32", "int8")
LAYER_TYPES = (nn.Conv2d, nn.Linear)
# Ops the TFLite converter fuses a following ReLU / ReLU6 into.
FUSES_ACTIVATION = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "ADD", "MUL", "SUB"}
RELU, RELU6 = 1, 3  # schema ActivationFunctionType
SAME, VALID = 0, 1  # schema Padding
NCHW_TO_NHWC_AXIS = {0: 0, 1: 3, 2: 1, 3: 2}


class UnsupportedLayer(ValueError):
    """A layer or operation this module cannot map to the export's TFLite ops."""


@dataclass(frozen=True)
class TorchOp:
    sig: OpSig
    layer: str | None  # the Conv2d / Linear module path this op computes (role "layer") or pads (role "pad")
    role: str  # "layer" | "pad" | "other"


def torch_ops(module: nn.Module, input_shape: tuple[int, ...], precision: str) -> list[TorchOp]:
    """The ops (in execution order) that the export (torch -> ONNX -> onnx2tf -> TFLite) would produce for
    `module` (eval mode) at `input_shape` (N,C,H,W, N=1), in `precision` "float32" or "int8" (full-integer,
    int8 input/output, per-channel weights, as the export stage writes it by default)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if len(input_shape) != 4 or input_shape[0] != 1:
        raise ValueError(f"input_shape must be (1, C, H, W), got {tuple(input_shape)}")
    graph_module, scopes = _traced(module.eval(), tuple(input_shape))
    mapper = _Mapper(graph_module, scopes, _Types(precision == "int8"))
    return mapper.run()


def _traced(module: nn.Module, input_shape: tuple[int, ...]) -> tuple[fx.GraphModule, dict[str, str]]:
    """The graph the export converts (flatten->Linear folded into convs), with shapes."""
    exported, _ = fold_flatten_linear(module, input_shape)
    scopes = dict(getattr(exported, "export_scopes", None) or {})
    try:
        graph_module = exported if isinstance(exported, fx.GraphModule) else fx.symbolic_trace(exported)
        with torch.no_grad():
            ShapeProp(graph_module).propagate(torch.zeros(input_shape))
    except Exception as exc:  # data-dependent control flow etc.: nothing to map
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UnsupportedLayer(f"{type(module).__name__}: torch.fx cannot trace it ({first})") from None
    return graph_module, scopes


# -- tensor types ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Types:
    int8: bool

    def act(self, shape: tuple[int, ...]) -> TensorSig:
        return TensorSig(tuple(shape), "int8" if self.int8 else "float32", False, "pt" if self.int8 else "")

    def weight(self, shape: tuple[int, ...]) -> TensorSig:
        return TensorSig(tuple(shape), "int8" if self.int8 else "float32", True, "pc" if self.int8 else "")

    def bias(self, n: int) -> TensorSig:
        return TensorSig((n,), "int32" if self.int8 else "float32", True, "pc" if self.int8 else "")

    def constant(self, shape: tuple[int, ...]) -> TensorSig:
        """A float operand of an elementwise op (BatchNorm's scale and shift)."""
        return TensorSig(tuple(shape), "int8" if self.int8 else "float32", True, "pt" if self.int8 else "")


def _ints(values: list[int] | tuple[int, ...], shape: tuple[int, ...] | None = None, dtype: str = "int32") -> TensorSig:
    values = tuple(int(v) for v in values)
    small = 0 < len(values) <= SMALL_INT_CONSTANT
    return TensorSig(shape or (len(values),), dtype, True, "", values if small else None)


def _nhwc(shape: tuple[int, ...]) -> tuple[int, ...]:
    return (shape[0], shape[2], shape[3], shape[1]) if len(shape) == 4 else tuple(shape)


# -- ops being built -------------------------------------------------------------------------------


@dataclass
class _Draft:
    """An op whose options may still change (a later ReLU fuses into it)."""

    op: str
    inputs: tuple[TensorSig, ...]
    outputs: tuple[TensorSig, ...]
    options_class: str | None = None  # schema options class without the T, e.g. "Conv2DOptions"
    options: dict[str, Any] = field(default_factory=dict)
    layer: str | None = None
    role: str = "other"

    def final(self) -> TorchOp:
        options: tuple[tuple[str, Any], ...] = ()
        type_name = ""
        if self.options_class is not None:
            obj = getattr(schema(), f"{self.options_class}T")()
            for name, value in self.options.items():
                if not hasattr(obj, name):
                    raise AttributeError(f"{self.options_class} has no field {name}")
                setattr(obj, name, value)
            options, type_name = options_of(obj), options_type_name(obj)
        return TorchOp(OpSig(self.op, self.inputs, self.outputs, options, type_name), self.layer, self.role)


@dataclass
class _Value:
    """A traced tensor as the TFLite graph holds it."""

    sig: TensorSig
    producer: _Draft | None = None  # the op that wrote it (for activation fusion)
    onnx_producer: str = ""  # the ONNX op type that makes it (the NCHW-shape rule, maxpool decisions)
    fusable: bool = True  # no other user reads it before the next op
    nchw: bool = False  # onnx2tf's tensor can carry the NCHW shape (`convert.grouped_conv.carries_nchw_shape`)


class _Mapper:
    def __init__(self, graph_module: fx.GraphModule, scopes: dict[str, str], types: _Types) -> None:
        self.gm, self.scopes, self.t = graph_module, scopes, types
        self.modules = dict(graph_module.named_modules())
        self.values: dict[fx.Node, _Value] = {}
        self.drafts: list[_Draft] = []
        self.skip: set[fx.Node] = set()

    def run(self) -> list[TorchOp]:
        for node in self.gm.graph.nodes:
            if node in self.skip or node.op == "output":
                continue
            self._map(node)
        return [d.final() for d in self.drafts]

    # -- helpers ---------------------------------------------------------------------------------

    def emit(self, draft: _Draft) -> _Draft:
        self.drafts.append(draft)
        return draft

    def shape(self, node: fx.Node) -> tuple[int, ...]:
        meta = node.meta.get("tensor_meta")
        if meta is None or not hasattr(meta, "shape"):
            raise UnsupportedLayer(f"{node.name}: no tensor shape (not a single tensor)")
        return tuple(int(s) for s in meta.shape)

    def value(self, arg: Any) -> _Value:
        if not isinstance(arg, fx.Node) or arg not in self.values:
            raise UnsupportedLayer(f"operand {arg!r}: not a tensor computed from the input")
        return self.values[arg]

    def out(self, node: fx.Node, draft: _Draft | None, onnx_producer: str, sig: TensorSig | None = None) -> None:
        sig = sig or (draft.outputs[0] if draft is not None else self.t.act(_nhwc(self.shape(node))))
        nchw = carries_nchw_shape(onnx_producer, [self.values[n].nchw for n in node.all_input_nodes if n in self.values])
        self.values[node] = _Value(sig, draft, onnx_producer, len(node.users) == 1, nchw)

    def unsupported(self, node: fx.Node, what: str) -> UnsupportedLayer:
        return UnsupportedLayer(f"{node.name}: {what} has no mapping to the export's TFLite ops")

    def layer_name(self, path: str) -> str:
        return self.scopes.get(path, path)

    # -- dispatch ----------------------------------------------------------------------------------

    def _map(self, node: fx.Node) -> None:
        if node.op == "placeholder":
            self.out(node, None, "input")
        elif node.op == "get_attr":
            return  # constants are read by the nodes that use them
        elif node.op == "call_module":
            self._module(node, self.modules[module_path(node)])
        elif node.op in ("call_function", "call_method"):
            self._function(node)
        else:
            raise self.unsupported(node, node.op)

    def _module(self, node: fx.Node, m: nn.Module) -> None:
        path = module_path(node)
        handlers: list[tuple[type | tuple[type, ...], Callable[..., None]]] = [
            (nn.Conv2d, self.conv), (nn.Linear, self.linear), (nn.BatchNorm2d, self.batchnorm),
            ((nn.ReLU, nn.ReLU6), self.relu), (nn.Hardswish, self.hardswish), (nn.Hardsigmoid, self.hardsigmoid),
            (nn.MaxPool2d, self.maxpool), (nn.AvgPool2d, self.avgpool), (nn.AdaptiveAvgPool2d, self.adaptive_pool),
            (nn.Flatten, self.flatten), (PASS_THROUGH, self.alias),
        ]
        for kind, handler in handlers:
            if isinstance(m, kind):
                handler(node, m)
                return
        raise UnsupportedLayer(f"{path} ({type(m).__name__}): no mapping to the export's TFLite ops")

    def _function(self, node: fx.Node) -> None:
        target = node.target
        name = target if isinstance(target, str) else getattr(target, "__name__", str(target))
        if target in (operator.add, torch.add, operator.iadd) or name in ("add", "add_"):
            self.binary(node, "ADD", "AddOptions", "Add")
        elif target in (operator.mul, torch.mul, operator.imul) or name in ("mul", "mul_"):
            self.binary(node, "MUL", "MulOptions", "Mul")
        elif target in (F.relu, torch.relu) or name in ("relu", "relu_"):
            self.relu(node, nn.ReLU())
        elif target is F.relu6:
            self.relu(node, nn.ReLU6())
        elif target is F.hardswish:
            self.hardswish(node, nn.Hardswish())
        elif target is F.hardsigmoid:
            self.hardsigmoid(node, nn.Hardsigmoid())
        elif target is torch.flatten or name == "flatten":
            self.flatten(node, None)
        elif target is F.adaptive_avg_pool2d:
            self.adaptive_pool(node, None)
        elif target is torch.cat:
            self.concat(node)
        elif name == "index_select":
            self.gather(node)
        elif target is F.dropout or name in ("contiguous",):
            self.alias(node, None)
        else:
            raise self.unsupported(node, f"{node.op} {name}")

    # -- layers ------------------------------------------------------------------------------------

    def conv(self, node: fx.Node, conv: nn.Module) -> None:
        assert isinstance(conv, nn.Conv2d)
        path = module_path(node)
        if conv.padding_mode != "zeros":
            raise UnsupportedLayer(f"{path} (Conv2d): padding_mode {conv.padding_mode!r} (only zeros is mapped)")
        end = self._folded_batchnorm(node)
        x = self.value(node.args[0])
        cin, cout, groups = conv.in_channels, conv.out_channels, conv.groups
        n, _, h, w = self.shape(node.args[0])  # type: ignore[arg-type]
        _, _, oh, ow = self.shape(end)
        kh, kw = conv.kernel_size
        pads = _conv_pads(conv, (h, w))
        layer = self.layer_name(path)
        if is_ambiguous_grouped_conv(groups, cin, w, x.nchw):
            draft = self._split_grouped(x, conv, pads, (h, w), (oh, ow), layer)
        else:
            # onnx2tf takes a carried NCHW shape's width for the channels: a depthwise conv there whose
            # width differs is written as a grouped CONV_2D (measured; same outputs).
            depthwise = groups > 1 and groups == cin and conv.stride[0] == conv.stride[1] and not (x.nchw and w != cin)
            inp, padding = self._padded(x, pads, (h, w), (oh, ow), layer)
            if depthwise:
                draft = self.emit(_Draft(
                    "DEPTHWISE_CONV_2D", (inp, self.t.weight((1, kh, kw, cout)), self.t.bias(cout)),
                    (self.t.act((n, oh, ow, cout)),), "DepthwiseConv2DOptions",
                    _conv_options(conv, padding) | {"depthMultiplier": cout // cin}, layer, "layer"))
            else:
                draft = self.emit(_Draft(
                    "CONV_2D", (inp, self.t.weight((cout, kh, kw, cin // groups)), self.t.bias(cout)),
                    (self.t.act((n, oh, ow, cout)),), "Conv2DOptions", _conv_options(conv, padding), layer, "layer"))
        self.out(end, draft, "Conv")

    def _folded_batchnorm(self, node: fx.Node) -> fx.Node:
        """The BatchNorm2d torch.onnx folds into this conv (its only user), else the conv node itself."""
        if len(node.users) != 1:
            return node
        (user,) = node.users
        if user.op == "call_module" and isinstance(self.modules[module_path(user)], nn.BatchNorm2d):
            self.skip.add(user)
            return user
        return node

    def _padded(self, x: _Value, pads: tuple[int, int, int, int], size: tuple[int, int], out_size: tuple[int, int],
                layer: str | None) -> tuple[TensorSig, int]:
        """onnx2tf's choice: SAME for symmetric pads that keep the size, else an explicit PAD + VALID."""
        top, left, bottom, right = pads
        if top == bottom and left == right and size == out_size:
            return x.sig, SAME
        if not any(pads):
            return x.sig, VALID
        n, h, w, c = x.sig.shape
        padded = self.t.act((n, h + top + bottom, w + left + right, c))
        self.emit(_Draft("PAD", (x.sig, _ints((0, 0, top, bottom, left, right, 0, 0), (4, 2))), (padded,),
                         layer=layer, role="pad" if layer else "other"))
        return padded, VALID

    def _split_grouped(self, x: _Value, conv: nn.Conv2d, pads, size, out_size, layer: str) -> _Draft:
        """`convert.grouped_conv`'s rewrite: slices of the NCHW tensor, one conv per group, concatenated."""
        n, h, w, c = x.sig.shape
        g, cout = conv.groups, conv.out_channels
        per_in, per_out = c // g, cout // g
        kh, kw = conv.kernel_size
        nchw = self.t.act((n, c, h, w))
        self.emit(_Draft("TRANSPOSE", (x.sig, _ints((0, 3, 1, 2))), (nchw,)))
        parts = []
        for k in range(g):
            sliced = self.t.act((n, per_in, h, w))
            self.emit(_Draft("STRIDED_SLICE", (nchw, _ints((0, k * per_in, 0, 0)), _ints((n, (k + 1) * per_in, h, w)),
                                               _ints((1, 1, 1, 1))), (sliced,), "StridedSliceOptions",
                             {"beginMask": 0b1101, "endMask": 0b1101}))
            part = _Value(self.t.act((n, h, w, per_in)))
            self.emit(_Draft("TRANSPOSE", (sliced, _ints((0, 2, 3, 1))), (part.sig,)))
            inp, padding = self._padded(part, pads, size, out_size, layer)
            parts.append(self.emit(_Draft(
                "CONV_2D", (inp, self.t.weight((per_out, kh, kw, per_in)), self.t.bias(per_out)),
                (self.t.act((n, *out_size, per_out)),), "Conv2DOptions", _conv_options(conv, padding), layer, "layer")))
        return self.emit(_Draft("CONCATENATION", tuple(p.outputs[0] for p in parts), (self.t.act((n, *out_size, cout)),),
                                "ConcatenationOptions", {"axis": 3}))

    def linear(self, node: fx.Node, linear: nn.Module) -> None:
        assert isinstance(linear, nn.Linear)
        x = self.value(node.args[0])
        layer = self.layer_name(module_path(node))
        bias = linear.bias is not None and bool(torch.any(linear.bias.detach() != 0))
        shape = self.shape(node)
        if len(shape) != 2:
            raise UnsupportedLayer(f"{layer} (Linear): input of rank {len(shape)} (only flat (1, features) inputs are mapped)")
        draft = self.emit(self._fully_connected(x.sig, linear, bias, layer))
        self.out(node, draft, "Gemm")

    def _fully_connected(self, x: TensorSig, linear: nn.Linear, bias: bool, layer: str) -> _Draft:
        return _Draft(
            "FULLY_CONNECTED", (x, self.t.weight((linear.out_features, linear.in_features)),
                                self.t.bias(linear.out_features) if bias else ABSENT),
            (self.t.act((1, linear.out_features)),), "FullyConnectedOptions", {}, layer, "layer")

    # -- activations ---------------------------------------------------------------------------------

    def relu(self, node: fx.Node, m: nn.Module) -> None:
        kind, op = (RELU6, "RELU6") if isinstance(m, nn.ReLU6) else (RELU, "RELU")
        x = self.value(node.args[0])
        onnx = "Clip" if kind == RELU6 else "Relu"
        if x.producer is not None and x.fusable and x.producer.op in FUSES_ACTIVATION \
                and not x.producer.options.get("fusedActivationFunction"):
            x.producer.options["fusedActivationFunction"] = kind
            self.out(node, x.producer, onnx, x.sig)
            return
        draft = self.emit(_Draft(op, (x.sig,), (x.sig,)))
        self.out(node, draft, onnx)

    def hardswish(self, node: fx.Node, m: nn.Module) -> None:
        x = self.value(node.args[0])
        producer = x.producer
        if producer is not None and producer.op == "FULLY_CONNECTED" and x.fusable and not producer.options:
            # x * relu6(x + 3) / 6 after a Linear: the converter folds "+3, /6" into a copy of the layer
            # (which therefore always has a bias) with RELU6 fused, and multiplies the two.
            second = _Draft(producer.op, (producer.inputs[0], producer.inputs[1], self.t.bias(producer.inputs[1].shape[0])),
                            producer.outputs, "FullyConnectedOptions", {"fusedActivationFunction": RELU6},
                            producer.layer, "layer")
            self.emit(second)
            draft = self.emit(_Draft("MUL", (x.sig, second.outputs[0]), (x.sig,), "MulOptions", {}))
        else:
            draft = self.emit(_Draft("HARD_SWISH", (x.sig,), (x.sig,)))
        self.out(node, draft, "HardSwish")

    def hardsigmoid(self, node: fx.Node, m: nn.Module) -> None:
        x = self.value(node.args[0])
        producer = x.producer
        folds = producer is not None and x.fusable and producer.op in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED") \
            and not producer.options.get("fusedActivationFunction")
        if not folds:
            # alpha * x + beta before the clip: nothing to fold them into
            scale = self.emit(_Draft("MUL", (x.sig, self.t.constant(())), (x.sig,), "MulOptions", {}))
            self.emit(_Draft("ADD", (scale.outputs[0], self.t.constant(())), (x.sig,), "AddOptions", {}))
        draft = self.emit(_Draft("RELU_0_TO_1", (x.sig,), (x.sig,)))
        self.out(node, draft, "HardSigmoid")

    # -- other ops -------------------------------------------------------------------------------------

    def batchnorm(self, node: fx.Node, bn: nn.Module) -> None:
        """A BatchNorm not right after a conv: ONNX BatchNormalization, which onnx2tf writes as x * a + b."""
        x = self.value(node.args[0])
        c = x.sig.shape[-1]
        scaled = self.emit(_Draft("MUL", (x.sig, self.t.constant((c,))), (x.sig,), "MulOptions", {}))
        shifted = self.emit(_Draft("ADD", (scaled.outputs[0], self.t.constant((c,))), (x.sig,), "AddOptions", {}))
        self.out(node, shifted, "BatchNormalization")

    def binary(self, node: fx.Node, op: str, options: str, onnx: str) -> None:
        if len(node.args) != 2 or node.kwargs:
            raise self.unsupported(node, f"{op.lower()} with arguments {node.args!r}")
        a, b = (self.value(arg) for arg in node.args)
        draft = self.emit(_Draft(op, (a.sig, b.sig), (self.t.act(_nhwc(self.shape(node))),), options, {}))
        self.out(node, draft, onnx)

    def maxpool(self, node: fx.Node, pool: nn.Module) -> None:
        assert isinstance(pool, nn.MaxPool2d)
        x = self.value(node.args[0])
        kh, kw = _pair(pool.kernel_size)
        sh, sw = _pair(pool.stride if pool.stride is not None else pool.kernel_size)
        ph, pw = _pair(pool.padding)
        if pool.ceil_mode or _pair(pool.dilation) != (1, 1):
            raise UnsupportedLayer(f"{module_path(node)} (MaxPool2d): ceil_mode or dilation is not mapped")
        inp = x.sig
        padding = VALID
        if ph or pw:
            n, h, w, c = x.sig.shape
            if x.onnx_producer not in ("Relu", "Clip"):  # `convert.maxpool` zero-pads only after a ReLU
                raise UnsupportedLayer(f"{module_path(node)} (MaxPool2d): padding on an input that is not a ReLU's")
            inp = self.t.act((n, h + 2 * ph, w + 2 * pw, c))
            self.emit(_Draft("PAD", (x.sig, _ints((0, 0, ph, ph, pw, pw, 0, 0), (4, 2))), (inp,)))
        draft = self.emit(_Draft(
            "MAX_POOL_2D", (inp,), (self.t.act(_nhwc(self.shape(node))),), "Pool2DOptions",
            {"padding": padding, "strideH": sh, "strideW": sw, "filterHeight": kh, "filterWidth": kw}))
        self.out(node, draft, "MaxPool")

    def avgpool(self, node: fx.Node, pool: nn.Module) -> None:
        """An unpadded average pool (what `fold_flatten_linear` leaves of an evenly binning adaptive one)."""
        assert isinstance(pool, nn.AvgPool2d)
        kh, kw = _pair(pool.kernel_size)
        sh, sw = _pair(pool.stride if pool.stride is not None else pool.kernel_size)
        if _pair(pool.padding) != (0, 0) or pool.ceil_mode:
            raise UnsupportedLayer(f"{module_path(node)} (AvgPool2d): padding or ceil_mode is not mapped")
        x = self.value(node.args[0])
        draft = self.emit(_Draft(
            "AVERAGE_POOL_2D", (x.sig,), (self.t.act(_nhwc(self.shape(node))),), "Pool2DOptions",
            {"padding": VALID, "strideH": sh, "strideW": sw, "filterHeight": kh, "filterWidth": kw}))
        self.out(node, draft, "AveragePool")

    def adaptive_pool(self, node: fx.Node, pool: nn.Module | None) -> None:
        shape = self.shape(node)
        if tuple(shape[2:]) != (1, 1):
            raise self.unsupported(node, f"adaptive average pooling to {tuple(shape[2:])} (only global pooling)")
        x = self.value(node.args[0])
        draft = self.emit(_Draft("MEAN", (x.sig, _ints((1, 2))), (self.t.act(_nhwc(shape)),), "ReducerOptions",
                                 {"keepDims": True}))
        self.out(node, draft, "GlobalAveragePool")

    def flatten(self, node: fx.Node, m: nn.Module | None) -> None:
        """A full flatten of a 1x1 map into a Linear is free (FULLY_CONNECTED reads the map); else RESHAPE."""
        x = self.value(node.args[0])
        shape = self.shape(node)
        source = self.shape(node.args[0])  # type: ignore[arg-type]
        if len(source) == 4 and source[2] * source[3] == 1 and self._only_linears_read(node):
            self.values[node] = x
            return
        if len(source) == 4 and source[2] * source[3] != 1:
            raise self.unsupported(node, f"flattening a {source[2]}x{source[3]} map (not folded into a conv)")
        draft = self.emit(_Draft("RESHAPE", (x.sig, _ints(shape)), (self.t.act(shape),), "ReshapeOptions", {}))
        self.out(node, draft, "Reshape")

    def _only_linears_read(self, node: fx.Node) -> bool:
        """Every path from `node` reaches a Linear, through ReLUs and eval-time no-ops only (the converter
        moves the reshape past them and fuses the ReLU into the op before the flatten)."""
        for user in node.users:
            if user.op == "call_function" and user.target in (F.relu, torch.relu, F.relu6):
                through = True
            elif user.op == "call_module":
                m = self.modules[module_path(user)]
                if isinstance(m, nn.Linear):
                    continue
                through = isinstance(m, (*PASS_THROUGH, nn.ReLU, nn.ReLU6))
            else:
                through = False
            if not through or not self._only_linears_read(user):
                return False
        return True

    def concat(self, node: fx.Node) -> None:
        tensors = node.args[0]
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
        shape = self.shape(node)
        assert isinstance(tensors, (list, tuple)) and isinstance(dim, int)
        axis = NCHW_TO_NHWC_AXIS[dim % 4] if len(shape) == 4 else dim % len(shape)
        draft = self.emit(_Draft("CONCATENATION", tuple(self.value(t).sig for t in tensors),
                                 (self.t.act(_nhwc(shape)),), "ConcatenationOptions", {"axis": axis}))
        self.out(node, draft, "Concat")

    def gather(self, node: fx.Node) -> None:
        """`x.index_select(1, perm)` with a constant index (ChannelShuffle) -> GATHER on channels."""
        x_node, dim, index = (list(node.args) + [node.kwargs.get("dim"), node.kwargs.get("index")])[:3]
        if dim != 1 or not (isinstance(index, fx.Node) and index.op == "get_attr"):
            raise self.unsupported(node, "index_select other than a constant channel permutation")
        values = _attribute(self.gm, str(index.target))
        x = self.value(x_node)
        shape = self.shape(node)
        draft = self.emit(_Draft("GATHER", (x.sig, _ints(values.tolist(), dtype="int64")),
                                 (self.t.act(_nhwc(shape)),), "GatherOptions", {"axis": 3}))
        self.out(node, draft, "Gather")

    def alias(self, node: fx.Node, m: nn.Module | None) -> None:
        self.values[node] = self.value(node.args[0])


def _pair(value: Any) -> tuple[int, int]:
    return (int(value), int(value)) if isinstance(value, int) else (int(value[0]), int(value[1]))


def _attribute(gm: fx.GraphModule, target: str) -> torch.Tensor:
    obj: Any = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _conv_pads(conv: nn.Conv2d, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) as torch.onnx writes them."""
    if isinstance(conv.padding, str):
        if conv.padding == "valid":
            return (0, 0, 0, 0)
        totals = [d * (k - 1) for d, k in zip(conv.dilation, conv.kernel_size)]
        return (totals[0] // 2, totals[1] // 2, totals[0] - totals[0] // 2, totals[1] - totals[1] // 2)
    ph, pw = _pair(conv.padding)
    return (ph, pw, ph, pw)


def _conv_options(conv: nn.Conv2d, padding: int) -> dict[str, Any]:
    return {"padding": padding, "strideH": conv.stride[0], "strideW": conv.stride[1],
            "dilationHFactor": conv.dilation[0], "dilationWFactor": conv.dilation[1]}
