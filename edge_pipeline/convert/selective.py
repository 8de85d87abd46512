"""Which ops run in float when a layer is kept in float in an int8 model.

An int8 tensor is quantized where it is produced and read: keeping only the offending op in float
would quantize its output again right at the next op's input, with the same too-wide range. So
the float region grows from each kept op along its consumers, through ops that carry their
input's range along (pooling, reshapes, padding, concatenation, additions, activations), and
includes the first weighted op on each path (convolution, fully connected): weights are where a
layer with one huge channel is compensated, so their output has an ordinary range again.
"""

from __future__ import annotations

from .inspect import Graph

WEIGHTED_OPS = frozenset({"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "BATCH_MATMUL"})


def float_region(graph: Graph, kept: set[int]) -> set[int]:
    """Op indices to run in float for the kept op indices."""
    consumers = graph.consumers()
    ops = {op.index: op for op in graph.ops}
    region: set[int] = set()
    stack = [ops[i] for i in kept]
    while stack:
        op = stack.pop()
        if op.index in region:
            continue
        region.add(op.index)
        if op.index in kept or op.name not in WEIGHTED_OPS:
            for out in op.outputs:
                stack += consumers.get(out, [])
    return region


def denylist(graph: Graph, kept: set[int]) -> list[str]:
    """Output tensor names of the float region: what `mlir_quantize(denylisted_nodes=...)` takes."""
    region = float_region(graph, kept)
    names: list[str] = []
    for op in graph.ops:
        if op.index in region:
            names += [graph.tensors[t].name for t in op.outputs if graph.tensors[t].name not in names]
    return names
