"""Grouped convolutions that onnx2tf would mistake for depthwise ones (a rewrite of the ONNX model).

onnx2tf 1.29 decides that a Conv with `group > 1` is depthwise when `group` equals the last
dimension of its TensorFlow input. onnx2tf's Add (its "rescue guard" for broadcast shapes) can
leave its output with the ONNX (NCHW) static shape, so that last dimension is the feature map's
*width*: a grouped conv with 8 groups on an 8x8 map after an Add becomes a DEPTHWISE_CONV_2D with
a channel multiplier (wrong outputs, or a conversion crash when a later op sees the wrong channel
count). Measured on torchvision mobilenet_v2 at 64x64 after `grouped_pointwise` with 4 groups
(relative error 0.85), on a residual Add -> ReLU -> 1x1 conv with 8 groups on an 8x8 map (4.7e-3),
and on a 3-layer net (conv, residual add, 1x1 conv with 8 groups on an 8x8 map: conversion fails).

The NCHW shape survives the ops after the Add that onnx2tf applies to the tensor as it is
(`carries_nchw_shape`), measured with that 3-layer net and these ops between the Add and the
grouped conv (each one alone crashed the conversion; see tests/convert/test_grouped_conv.py):
- elementwise activations: Relu, Clip (ReLU6), LeakyRelu, Elu, HardSwish, HardSigmoid, Sigmoid,
  Tanh, SiLU (Sigmoid, Mul), GELU (Div, Erf, Add, Mul);
- arithmetic with a constant: Mul / Add / Sub / Div by a scalar or a per-channel (1, C, 1, 1) tensor;
- Concat when any input carries it (either order).
It does not survive ops that read the layout (Conv, depthwise Conv, MaxPool, AveragePool,
BatchNormalization, GlobalAveragePool) nor a Mul with a tensor that does not carry it (SE gating,
either order): grouped convs after those converted correctly. Only the width matters (a 16x8 map,
W = 8, crashed; an 8x16 one converted correctly). A depthwise conv (group == channels) on a carried
shape whose width differs is written as a grouped CONV_2D (same outputs; `profiling.torch_ops` knows).

Only in that ambiguous case (the input carries the NCHW shape, and group equals the map's width
but not its channel count), the conv becomes Split (channels) -> one ordinary conv per group ->
Concat, the same function: onnx2tf converts it to slices + CONV_2D x group + CONCATENATION, with
TRANSPOSE ops around the slices (onnx2tf's price for that tensor; correct beats fast). Every other
grouped conv stays one CONV_2D (TFLite runs grouped convs natively).
"""

from __future__ import annotations

from collections.abc import Sequence

# Producers whose onnx2tf output can carry the NCHW shape whatever their inputs hold (grouped convs
# after convs, depthwise convs and activations of convs converted correctly in the same models).
AMBIGUOUS_PRODUCERS = frozenset({"Add", "Sum"})
# Ops onnx2tf applies to the tensor as it is: their output carries the NCHW shape when every
# non-constant input does (a Mul of a carrying tensor with one that does not was converted correctly).
# Measured: Relu, Clip, LeakyRelu, Elu, HardSwish, HardSigmoid, Sigmoid, Tanh, Mul, Sub, Div, Erf;
# the others are their elementwise kin, listed so that a miss costs TRANSPOSE ops rather than outputs.
ELEMENTWISE_PASS_THROUGH = frozenset({
    "Relu", "Clip", "LeakyRelu", "PRelu", "Elu", "Selu", "Celu", "HardSwish", "HardSigmoid", "Sigmoid",
    "Tanh", "Softplus", "Softsign", "Mish", "Gelu", "Erf", "Neg", "Abs", "Exp", "Sqrt", "Pow",
    "Mul", "Sub", "Div", "Identity", "Dropout",
})
# Ops whose output carries it when any input does (measured: Concat of an Add's and a conv's outputs).
JOINS = frozenset({"Concat"})


def carries_nchw_shape(op_type: str, inputs_carry: Sequence[bool]) -> bool:
    """Whether onnx2tf's output of an `op_type` node can hold the ONNX (NCHW) static shape, given
    which of its non-constant inputs do. Used on ONNX graphs here and on traced torch models by
    `profiling.torch_ops`, so that the predicted ops follow the same rule."""
    if op_type in AMBIGUOUS_PRODUCERS:
        return True
    if op_type in JOINS:
        return any(inputs_carry)
    if op_type in ELEMENTWISE_PASS_THROUGH:
        return bool(inputs_carry) and all(inputs_carry)
    return False


def is_ambiguous_grouped_conv(group: int, channels: int | None, width: int | None, input_carries: bool) -> bool:
    """onnx2tf would read this grouped conv as a depthwise one: its TF input's last dimension is the
    width (the NCHW shape), and the width, not the channel count, equals `group`."""
    return input_carries and group > 1 and group != channels and group == width


def nchw_tensors(graph) -> set[str]:
    """Names of the tensors of an onnx.GraphProto (nodes in topological order, as ONNX requires)
    whose onnx2tf version can carry the NCHW shape."""
    constants = {i.name for i in graph.initializer}
    constants |= {out for n in graph.node if n.op_type == "Constant" for out in n.output}
    carrying: set[str] = set()
    for node in graph.node:
        inputs = [name for name in node.input if name and name not in constants]
        if carries_nchw_shape(node.op_type, [name in carrying for name in inputs]):
            carrying.update(node.output)
    return carrying


def split_ambiguous_grouped_convs(model) -> int:
    """Rewrite an onnx.ModelProto in place; return how many grouped Conv nodes were split."""
    import onnx
    from onnx import helper

    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {}
    for value in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        dims = value.type.tensor_type.shape.dim
        shapes[value.name] = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    initializers = {i.name: i for i in model.graph.initializer}
    carrying = nchw_tensors(model.graph)
    nodes, count = [], 0
    for node in model.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        group = int(attrs.get("group", 1))
        shape = shapes.get(node.input[0]) if node.op_type == "Conv" else None
        ambiguous = (
            shape is not None and len(shape) == 4
            and is_ambiguous_grouped_conv(group, shape[1], shape[3], node.input[0] in carrying)
            and node.input[1] in initializers
            and (len(node.input) < 3 or not node.input[2] or node.input[2] in initializers)
        )
        if not ambiguous:
            nodes.append(node)
            continue
        assert shape is not None and shape[1] is not None  # the exported models have static channel counts
        nodes += _split(node, group, shape[1], attrs, initializers, model.graph, count)
        count += 1
    if count:
        del model.graph.node[:]
        model.graph.node.extend(nodes)
        used = {name for n in model.graph.node for name in n.input}
        keep = [i for i in model.graph.initializer if i.name in used]
        del model.graph.initializer[:]
        model.graph.initializer.extend(keep)
    return count


def _split(node, group: int, in_channels: int, attrs: dict, initializers: dict, graph, index: int) -> list:
    """Split -> `group` ordinary convs on their slices of the weights (and bias) -> Concat."""
    import numpy as np
    from onnx import helper, numpy_helper

    weight = numpy_helper.to_array(initializers[node.input[1]])
    bias = numpy_helper.to_array(initializers[node.input[2]]) if len(node.input) > 2 and node.input[2] else None
    out_per_group = weight.shape[0] // group
    scope = node.name.rsplit("/", 1)[0] if "/" in node.name else node.name
    prefix = f"{node.name}_split{index}"
    sizes = f"{prefix}_sizes"
    graph.initializer.append(numpy_helper.from_array(np.full(group, in_channels // group, np.int64), sizes))
    parts = [f"{prefix}_in{g}" for g in range(group)]
    new = [helper.make_node("Split", [node.input[0], sizes], parts, name=f"{scope}/Split", axis=1)]
    outputs = []
    conv_attrs = {k: v for k, v in attrs.items() if k != "group"}
    for g in range(group):
        w_name = f"{prefix}_w{g}"
        graph.initializer.append(numpy_helper.from_array(
            np.ascontiguousarray(weight[g * out_per_group:(g + 1) * out_per_group]), w_name))
        inputs = [parts[g], w_name]
        if bias is not None:
            b_name = f"{prefix}_b{g}"
            graph.initializer.append(numpy_helper.from_array(
                np.ascontiguousarray(bias[g * out_per_group:(g + 1) * out_per_group]), b_name))
            inputs.append(b_name)
        outputs.append(f"{prefix}_out{g}")
        new.append(helper.make_node("Conv", inputs, [outputs[-1]], name=f"{scope}/Conv_group{g}", **conv_attrs))
    new.append(helper.make_node("Concat", outputs, [node.output[0]], name=f"{scope}/Concat", axis=1))
    return new
