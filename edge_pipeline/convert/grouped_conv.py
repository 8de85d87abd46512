"""Grouped convolutions that onnx2tf would mistake for depthwise ones (a rewrite of the ONNX model).

onnx2tf 1.29 decides that a Conv with `group > 1` is depthwise when `group` equals the last
dimension of its TensorFlow input. After a residual Add, onnx2tf's tensor can carry the ONNX
(NCHW) static shape, so that last dimension is the feature map's *width*: a grouped conv with 4
groups on a 4x4 map after an Add becomes a DEPTHWISE_CONV_2D with a channel multiplier (wrong
outputs, or a conversion crash when a later op sees the wrong channel count). Measured here on
torchvision mobilenet_v2 at 64x64 after `grouped_pointwise` with 4 groups (relative error 0.85),
and on a 3-layer net (conv, residual add, 1x1 conv with 8 groups on an 8x8 map: conversion fails).

Only in that ambiguous case (the input comes from an Add, and group equals its height or width
but not its channel count), the conv becomes Split (channels) -> one ordinary conv per group ->
Concat, the same function: onnx2tf converts it to slices + CONV_2D x group + CONCATENATION, with
TRANSPOSE ops around the slices (onnx2tf's price for that tensor; correct beats fast). Every other
grouped conv stays one CONV_2D (TFLite runs grouped convs natively).
"""

from __future__ import annotations

# Producers whose onnx2tf output was seen to carry the NCHW shape (grouped convs after convs,
# depthwise convs and activations converted correctly in the same models).
AMBIGUOUS_PRODUCERS = {"Add", "Sum"}


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
    producers = {out: n.op_type for n in model.graph.node for out in n.output}
    nodes, count = [], 0
    for node in model.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        group = int(attrs.get("group", 1))
        shape = shapes.get(node.input[0]) if node.op_type == "Conv" else None
        ambiguous = (
            shape is not None and len(shape) == 4 and group > 1 and shape[1] != group
            and group in (shape[2], shape[3]) and producers.get(node.input[0]) in AMBIGUOUS_PRODUCERS
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
