"""MaxPool padding that integer quantization survives (a rewrite of the exported ONNX model).

A padded MaxPool means "pad with -inf". onnx2tf writes that as PADV2 with a huge negative
constant, and the TFLite quantizer gives the PADV2 input, output and constant one range: with
int8 the ReLU output before it gets a scale near 1e36 (everything collapses to one level; on
torchvision's resnet18 the reference kernels abort and XNNPACK refuses the model), and int16x8
leaves the constant float (PADV2 fails to prepare). After a ReLU the values are >= 0, so zero
padding gives the same maximum (each window holds at least one real value, since ONNX requires
padding < kernel): the MaxPool gets an explicit zero Pad in front and no padding of its own, which
converts to PAD (zero is the zero point) + MAX_POOL_2D. `export_onnx` applies it; the
onnxruntime-vs-torch check that follows the export confirms the rewrite is exact.
"""

from __future__ import annotations


def _non_negative(producer, constants: dict) -> bool:
    """A Relu, or a Clip whose lower bound is a constant >= 0 (ReLU6)."""
    if producer is None:
        return False
    if producer.op_type == "Relu":
        return True
    low = constants.get(producer.input[1]) if producer.op_type == "Clip" and len(producer.input) > 1 else None
    return low is not None and float(low.min()) >= 0.0


def zero_pad_maxpools(model) -> int:
    """Rewrite an onnx.ModelProto in place; return how many MaxPool nodes now read an explicit zero Pad."""
    import numpy as np
    from onnx import helper, numpy_helper

    graph = model.graph
    producers = {out: node for node in graph.node for out in node.output}
    constants = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    constants.update({n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in graph.node
                      if n.op_type == "Constant" and n.attribute and n.attribute[0].HasField("t")})
    nodes, count = [], 0
    for node in graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        pads = list(attrs.get("pads", []))
        dilations = set(attrs.get("dilations", [1]))
        rewrite = (
            node.op_type == "MaxPool" and any(pads) and not attrs.get("ceil_mode", 0) and dilations == {1}
            and len(node.output) == 1 and _non_negative(producers.get(node.input[0]), constants)
        )
        if not rewrite:
            nodes.append(node)
            continue
        half = len(pads) // 2  # ONNX pads: [x1_begin, x2_begin, ..., x1_end, x2_end, ...] over spatial axes
        full = [0, 0, *pads[:half], 0, 0, *pads[half:]]  # Pad covers N and C too
        pads_name = f"{node.name}_zero_pads"
        graph.initializer.append(numpy_helper.from_array(np.asarray(full, np.int64), pads_name))
        padded = f"{node.input[0]}_zero_padded_{count}"
        scope = node.name.rsplit("/", 1)[0] if "/" in node.name else node.name
        nodes.append(helper.make_node("Pad", [node.input[0], pads_name], [padded], name=f"{scope}/Pad", mode="constant"))
        for attribute in node.attribute:
            if attribute.name == "pads":
                attribute.CopyFrom(helper.make_attribute("pads", [0] * len(pads)))
        node.input[0] = padded
        nodes.append(node)
        count += 1
    if count:
        del graph.node[:]
        graph.node.extend(nodes)
    return count
