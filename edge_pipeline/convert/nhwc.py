"""Export-time rewrites that keep the TFLite graph free of layout TRANSPOSE ops.

TFLite is NHWC; PyTorch is NCHW. Flattening a CxHxW feature map (H*W > 1) into a Linear layer
depends on the NCHW element order, so onnx2tf must insert a TRANSPOSE before the RESHAPE. The same
computation is a Conv2d with an HxW kernel over the unflattened map (weights reshaped
out x C x H x W), after which the map is 1x1 and flattening is layout-free. The rewrite is exact
and only touches the exported graph: the saved model keeps its Linear layer.
"""

from __future__ import annotations

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from ..fxpatterns import is_full_flatten, linear_after, module_path


def pooling_matrix(size_in: int, size_out: int) -> torch.Tensor:
    """AdaptiveAvgPool1d as a (size_out x size_in) matrix: row k averages PyTorch's bin k."""
    matrix = torch.zeros(size_out, size_in)
    for k in range(size_out):
        start, end = (k * size_in) // size_out, -(-(k + 1) * size_in // size_out)
        matrix[k, start:end] = 1.0 / (end - start)
    return matrix


def _pool_before(node: fx.Node, modules: dict[str, nn.Module]) -> fx.Node | None:
    """The non-global AdaptiveAvgPool2d feeding only this flatten, if any.

    It is linear, so the Linear after the flatten can absorb it (see `_absorbs_pool`)."""
    source = node.args[0]
    if not (isinstance(source, fx.Node) and source.op == "call_module" and len(source.users) == 1):
        return None
    pool = modules[module_path(source)]
    meta = source.meta.get("tensor_meta")
    if not isinstance(pool, nn.AdaptiveAvgPool2d) or meta is None or tuple(meta.shape[2:]) == (1, 1):
        return None  # a global pool stays: it is one cheap MEAN op
    return source


def _absorbs_pool(size_in: tuple[int, int], size_out: tuple[int, int]) -> bool:
    """Whether the conv should absorb the pool rather than read its output.

    Absorbing makes the conv's kernel the size of the pool's INPUT: right for a pool that enlarges
    or keeps the map (VGG's 7x7 pool over a 2x2 map at 64x64 input, which ONNX cannot even express:
    "output size that are not factor of input size") or that bins unevenly (no plain average pool
    exists). A pool that shrinks the map by whole factors stays a cheap AVERAGE_POOL_2D: absorbing
    an exit branch's 32x32 -> 2x2 pool made a 32x32 kernel with 256x the weights and 10x the MACs."""
    (h, w), (oh, ow) = size_in, size_out
    return h * w <= oh * ow or h % oh != 0 or w % ow != 0


def _as_fixed_pool(graph_module: fx.GraphModule, pool: fx.Node, size_in: tuple[int, int], size_out: tuple[int, int]) -> None:
    """Replace an evenly binning AdaptiveAvgPool2d by the AvgPool2d it equals (exports as one AveragePool)."""
    kernel = (size_in[0] // size_out[0], size_in[1] // size_out[1])
    name = f"{str(pool.target).replace('.', '_')}_fixed"
    graph_module.add_submodule(name, nn.AvgPool2d(kernel, kernel))
    pool.target = name


def fold_flatten_linear(module: nn.Module, input_shape: tuple[int, ...]) -> tuple[nn.Module, int]:
    """Return an equivalent module with every Flatten->Linear over a HxW>1 map made a Conv2d
    (absorbing a non-global AdaptiveAvgPool2d right before the flatten where `_absorbs_pool` says so;
    otherwise that pool becomes the fixed AvgPool2d it equals)."""
    try:
        graph_module = fx.symbolic_trace(module.eval())
        ShapeProp(graph_module).propagate(torch.zeros(input_shape))
    except Exception:  # untraceable forward (data-dependent control flow): export unchanged
        return module, 0
    modules = dict(graph_module.named_modules())
    folded = 0
    renamed: dict[str, str] = {}
    for node in list(graph_module.graph.nodes):
        if not is_full_flatten(node, modules):
            continue
        source = node.args[0]
        meta = source.meta.get("tensor_meta") if isinstance(source, fx.Node) else None
        pool = _pool_before(node, modules)
        if not isinstance(source, fx.Node) or meta is None or len(meta.shape) != 4 or (pool is None and meta.shape[2] * meta.shape[3] == 1):
            continue
        linear_node = linear_after(node, modules)
        if linear_node is None:
            continue
        _, c, oh, ow = meta.shape
        linear = modules[module_path(linear_node)]
        assert isinstance(linear, nn.Linear)  # linear_after
        weight = linear.weight.detach().view(linear.out_features, c, oh, ow)
        h, w = oh, ow
        if pool is not None:
            pool_input = pool.args[0]
            assert isinstance(pool_input, fx.Node)  # the pool's input tensor
            size_in = tuple(pool_input.meta["tensor_meta"].shape[2:])
            if _absorbs_pool(size_in, (oh, ow)):
                source, (h, w) = pool_input, size_in
                weight = torch.einsum("ocij,ih,jw->ochw", weight, pooling_matrix(h, oh), pooling_matrix(w, ow))
            else:
                _as_fixed_pool(graph_module, pool, size_in, (oh, ow))
        conv = nn.Conv2d(c, linear.out_features, (h, w), bias=linear.bias is not None)
        with torch.no_grad():
            conv.weight.copy_(weight)
            if linear.bias is not None:
                assert conv.bias is not None  # made with a bias when the Linear has one
                conv.bias.copy_(linear.bias)
        name = f"nhwc_fold_{folded}"
        renamed[name] = str(linear_node.target)
        graph_module.add_submodule(name, conv)
        with graph_module.graph.inserting_before(linear_node):
            conv_node = graph_module.graph.call_module(name, (source,))
            flat = graph_module.graph.call_function(torch.flatten, (conv_node, 1))
        linear_node.replace_all_uses_with(flat)
        graph_module.graph.erase_node(linear_node)
        folded += 1
    if not folded:
        return module, 0
    graph_module.graph.eliminate_dead_code()
    graph_module.delete_all_unused_submodules()
    graph_module.recompile()
    # The Linear each conv replaces, so exported names (and per-layer diagnosis) keep the model's names.
    # nn.Module's stub types any attribute it does not declare as Tensor | Module; this one is a dict.
    graph_module.export_scopes = {**getattr(module, "export_scopes", {}), **renamed}  # type: ignore[assignment]
    return graph_module.eval(), folded
