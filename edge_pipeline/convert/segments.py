"""Cutting a model into a chain of segments at single-tensor crossings, and converting the chain.

An early-exit model runs as a chain: segment 0 takes the image, segment k takes segment k-1's
output, and each segment but the last also feeds an exit branch. A cut is valid only where exactly
one tensor crosses it (nothing computed before the cut is used after it except the cut's own
output), so a residual block is never cut inside: its skip connection would cross too.

`at: auto` cuts at the end of each spatial-resolution stage (as `compress.distill` pairs layers for
`layers: auto`): nodes are grouped by the resolution they work at (a pooling or strided layer that
downsamples belongs to the stage it ends), the last valid cut of each stage is taken, and the final
stage is left out (its end is the classifier's input: an exit there saves nothing).

Export: each segment with its exit branch is ONE module with two outputs (the branch's logits and the
feature map handed on), so a chain of k exits is k + 1 files per precision and k + 1 conversions,
through the same path as the export stage (ONNX checks, onnx2tf in the worker, every precision of the
quantize plan). int8 files are calibrated per segment on the previous segment's torch outputs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from ..errors import PipelineError
from .nhwc import fold_flatten_linear
from .onnx_export import INPUT_NAME, export_onnx, relative_max_error
from .runtime import load_interpreter, quantize_input, tensor_value
from .tflite_convert import run_conversion

FEATURES_NAME = "features"  # the ONNX name of a segment's second output, the map handed to the next segment

# Layers that end a resolution stage by downsampling without weights (they belong to the stage of their input).
_POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
_POOL_FUNCTIONS = (torch.nn.functional.max_pool2d, torch.nn.functional.avg_pool2d, torch.max_pool2d,
                   torch.nn.functional.adaptive_avg_pool2d, torch.nn.functional.adaptive_max_pool2d)


@dataclass(frozen=True)
class CutPoint:
    """A place the chain can be cut: the fx node, what it is in the model, its output shape (NCHW)."""

    node: str
    label: str  # the module path (or function) that produces it, for people
    shape: tuple[int, ...]
    resolution: tuple[int, int]  # the spatial size of the stage it ends


def trace(module: nn.Module, input_shape: tuple[int, ...]) -> fx.GraphModule:
    """torch.fx graph of the model's forward with output shapes (`tensor_meta`) on every node."""
    try:
        graph_module = fx.symbolic_trace(module.eval())
        ShapeProp(graph_module).propagate(torch.zeros(input_shape))
    except Exception as exc:  # data-dependent control flow, unsupported ops
        raise ValueError(f"torch.fx cannot trace the model ({type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}); "
                         "early exits need a traceable forward") from None
    return graph_module


def _shape(node: fx.Node) -> tuple[int, ...] | None:
    meta = node.meta.get("tensor_meta")
    shape = getattr(meta, "shape", None)
    return tuple(int(s) for s in shape) if shape is not None else None


def _label(node: fx.Node) -> str:
    """The module path of a module's output, else the graph node's name (`add_3`)."""
    return str(node.target) if node.op in ("call_module", "get_attr") else node.name


def _is_pool(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        return isinstance(modules.get(str(node.target)), _POOLS)
    return node.op == "call_function" and node.target in _POOL_FUNCTIONS


def _stage_resolution(node: fx.Node, modules: dict[str, nn.Module]) -> tuple[int, int] | None:
    """The spatial size a node works at: its output's, except a pooling layer's (its input's)."""
    source = node.args[0] if _is_pool(node, modules) and node.args else node
    shape = _shape(source) if isinstance(source, fx.Node) else None
    return (shape[2], shape[3]) if shape is not None and len(shape) == 4 else None


def cut_points(graph_module: fx.GraphModule) -> list[CutPoint]:
    """Every node whose 4-D output is the only tensor crossing from before it to after it, in order."""
    nodes = list(graph_module.graph.nodes)
    position = {n: i for i, n in enumerate(nodes)}
    last_use = {n: max((position[u] for u in n.users), default=position[n]) for n in nodes}
    modules = dict(graph_module.named_modules())
    out: list[CutPoint] = []
    reach = -1  # the furthest use of anything computed strictly before the current node
    for i, node in enumerate(nodes):
        shape = _shape(node)
        if (node.op not in ("placeholder", "output", "get_attr") and reach <= i and shape is not None and len(shape) == 4
                and node.users and all(u.op != "output" for u in node.users)):
            resolution = _stage_resolution(node, modules)
            if resolution is not None:
                out.append(CutPoint(node.name, _label(node), shape, resolution))
        if node.op != "get_attr":  # parameters and buffers can be read by any segment
            reach = max(reach, last_use[node])
    return out


def auto_cuts(graph_module: fx.GraphModule) -> list[CutPoint]:
    """One cut per spatial-resolution stage, without the final stage: the smallest tensor that
    crosses at that resolution, the latest of equals (a VGG stage's pooled output, a ResNet stage's
    last block output, a MobileNetV2 block output rather than an expanded tensor inside the next block)."""
    best: dict[tuple[int, int], CutPoint] = {}
    order: list[tuple[int, int]] = []
    modules = dict(graph_module.named_modules())
    for node in graph_module.graph.nodes:  # the stages, in order, including those with no valid cut
        resolution = _stage_resolution(node, modules) if node.op not in ("placeholder", "get_attr", "output") else None
        if resolution is not None and resolution not in order:
            order.append(resolution)
    for cut in cut_points(graph_module):
        current = best.get(cut.resolution)
        if current is None or math.prod(cut.shape) <= math.prod(current.shape):
            best[cut.resolution] = cut
    return [best[r] for r in order[:-1] if r in best]


def named_cuts(graph_module: fx.GraphModule, names: list[str]) -> list[CutPoint]:
    """Cuts at the outputs of named modules (or fx node names), in forward order; a name that is
    not a single-tensor crossing is a ValueError saying why."""
    valid = {c.node: c for c in cut_points(graph_module)}
    by_module: dict[str, list[fx.Node]] = {}  # module path -> the nodes it computes (a container: all of its children's)
    for node in graph_module.graph.nodes:
        paths = list(node.meta.get("nn_module_stack") or {})
        if node.op == "call_module":
            paths.append(str(node.target))
        for path in dict.fromkeys(paths):
            by_module.setdefault(path, []).append(node)
    chosen: list[CutPoint] = []
    for name in names:
        nodes = by_module.get(name) or [n for n in graph_module.graph.nodes if n.name == name]
        if not nodes:
            raise ValueError(f"{name!r} is not a module called by the model's forward (nor a graph node); "
                             f"valid cut points: {', '.join(c.label for c in valid.values())[:400]}")
        # The module's last node: a container's output, or the last call of a module called twice.
        node = nodes[-1]
        if node.name not in valid:
            raise ValueError(f"{name!r}: more than one tensor crosses the model after it (inside a residual block, or "
                             f"not a 4-D feature map); valid cut points: {', '.join(c.label for c in valid.values())[:400]}")
        chosen.append(valid[node.name])
    order = {c.node: i for i, c in enumerate(valid.values())}
    chosen = sorted(dict.fromkeys(chosen), key=lambda c: order[c.node])
    return chosen


def split(graph_module: fx.GraphModule, cuts: Iterable[str]) -> list[fx.GraphModule]:
    """The segments between the cuts (cut node names, in forward order): segment k returns cut k's
    output; the last one returns the model's output. They share the model's modules (training one
    trains the model)."""
    nodes = list(graph_module.graph.nodes)
    position = {n.name: i for i, n in enumerate(nodes)}
    ends = [position[c] for c in cuts]
    if ends != sorted(ends) or len(set(ends)) != len(ends):
        raise ValueError("cut points must be distinct and in forward order")
    segments = []
    start = -1
    for k, end in enumerate([*ends, len(nodes) - 1]):
        graph = fx.Graph()
        env: dict[fx.Node, fx.Node] = {}
        if start >= 0:
            env[nodes[start]] = graph.placeholder(INPUT_NAME)

        def arg(n: fx.Node, env=env, graph=graph) -> fx.Node:
            if n not in env:
                if n.op != "get_attr":
                    raise ValueError(f"node {n.name} crosses a cut")  # cut_points rules this out
                env[n] = graph.node_copy(n)
            return env[n]

        for node in nodes[start + 1: end + 1]:
            if node.op == "get_attr" and node not in env:
                env[node] = graph.node_copy(node)
            elif node.op != "get_attr":
                env[node] = graph.node_copy(node, arg)
        if end != len(nodes) - 1:
            graph.output(env[nodes[end]])
        segment = fx.GraphModule(graph_module, graph, class_name=f"Segment{k}")
        segment.graph.eliminate_dead_code()
        segment.recompile()
        segments.append(segment)
        start = end
    return segments


class SegmentWithExit(nn.Module):
    """One exported file: a segment, and its exit branch on the segment's output (if it has one).
    Returns (exit logits, features) or, for the last segment, the model's logits.

    `nhwc_features` (for export) hands the features on as NHWC: onnx2tf works in NHWC and then
    drops this permute, whereas an NCHW output makes it add a TRANSPOSE op for some graphs (a ReLU
    after a residual add), which the next segment's input would have to undo."""

    def __init__(self, segment: nn.Module, branch: nn.Module | None, nhwc_features: bool = False) -> None:
        super().__init__()
        self.segment, self.branch, self.nhwc_features = segment, branch, nhwc_features

    def forward(self, x: torch.Tensor) -> Any:
        h = self.segment(x)
        if self.branch is None:
            return h
        return self.branch(h), (h.permute(0, 2, 3, 1) if self.nhwc_features else h)


def segment_outputs(modules: list[SegmentWithExit], x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(logits, input of the segment) per segment for a batch: what each file must reproduce, and feeds on."""
    out: list[tuple[torch.Tensor, torch.Tensor]] = []
    with torch.no_grad():
        for module in modules:
            result = module.eval()(x)
            logits, nxt = (result, None) if module.branch is None else result
            out.append((logits, x))
            if nxt is not None:
                x = nxt
    return out


@dataclass
class SegmentFile:
    """One converted segment file and how to read it."""

    path: Path
    input: dict[str, Any]
    logits_output: int  # index into the interpreter's output details
    features_output: int | None  # None for the last segment
    facts: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        return {"file": self.path.name, "input": self.input, "logits_output": self.logits_output,
                "features_output": self.features_output, **self.facts}


def _io(detail: dict[str, Any]) -> dict[str, Any]:
    scale, zero = detail.get("quantization") or (0.0, 0)
    return {"shape": [int(s) for s in detail["shape"]], "dtype": np.dtype(detail["dtype"]).name,
            "scale": float(scale), "zero_point": int(zero)}


def output_roles(interpreter) -> tuple[int, int | None]:
    """(logits output index, features output index or None): the converter may reorder outputs, the
    ranks tell them apart (2-D logits, 4-D NHWC features)."""
    details = interpreter.get_output_details()
    logits = [i for i, d in enumerate(details) if len(d["shape"]) == 2]
    features = [i for i, d in enumerate(details) if len(d["shape"]) == 4]
    if len(logits) != 1 or len(features) > 1 or len(details) != len(logits) + len(features):
        raise PipelineError(f"export: a segment file has outputs of shapes {[list(d['shape']) for d in details]}; "
                            "expected one 2-D logits output and at most one 4-D feature map")
    return logits[0], (features[0] if features else None)


class ChainRunner:
    """Runs converted segment files in this process, sample by sample (static batch of 1).

    Inputs are NHWC. A feature map output is NHWC too, except where onnx2tf leaves it NCHW (it does
    for some graphs, e.g. a ReLU after a residual add): `layouts` says which (see `feature_layout`)."""

    def __init__(self, paths: list[Path], layouts: list[str] | None = None) -> None:
        self.interpreters = [load_interpreter(p) for p in paths]
        self.roles = [output_roles(i) for i in self.interpreters]
        self.layouts = list(layouts or ["NHWC"] * len(paths))
        for k, (path, (_, features)) in enumerate(zip(paths, self.roles)):
            if (features is None) != (k == len(paths) - 1):
                raise PipelineError(f"export: {path.name} {'lacks' if features is None else 'has'} the feature map output "
                                    f"{'the next segment needs' if features is None else 'of a middle segment'}; the converter "
                                    "changed the segment's outputs")

    def run_segment(self, k: int, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(exit logits, NHWC features handed on) for one NHWC float sample batch of 1."""
        interpreter = self.interpreters[k]
        inp = interpreter.get_input_details()[0]
        interpreter.set_tensor(inp["index"], quantize_input(x, inp))
        interpreter.invoke()
        details = interpreter.get_output_details()
        logits_i, features_i = self.roles[k]
        logits = tensor_value(interpreter, details[logits_i])
        features = tensor_value(interpreter, details[features_i]) if features_i is not None else None
        if features is not None and self.layouts[k] == "NCHW":
            features = np.ascontiguousarray(features.transpose(0, 2, 3, 1))
        return logits, features

    def all_exits(self, inputs_nhwc: np.ndarray) -> np.ndarray:
        """Logits of every exit (the last: the final classifier) for every sample: (exits, N, classes)."""
        out: list[list[np.ndarray]] = [[] for _ in self.interpreters]
        for sample in inputs_nhwc:
            x = sample[None]
            for k in range(len(self.interpreters)):
                logits, features = self.run_segment(k, x)
                out[k].append(logits[0])
                if features is not None:
                    x = features
        return np.stack([np.stack(o) for o in out])


def feature_layout(got: np.ndarray, reference_nchw: np.ndarray) -> tuple[str, float]:
    """The layout of a segment file's feature output (NHWC or NCHW) from its values on real inputs
    against torch's (NCHW), and the relative error in that layout; a square map with as many channels
    as pixels per side is told apart by the values, not the shape."""
    scale = float(np.max(np.abs(reference_nchw))) or 1.0
    candidates = {"NHWC": reference_nchw.transpose(0, 2, 3, 1), "NCHW": reference_nchw}
    errors = {layout: float(np.max(np.abs(got - ref))) / scale for layout, ref in candidates.items() if ref.shape == got.shape}
    if not errors:
        raise PipelineError(f"export: a segment's feature map has shape {list(got.shape)}, torch's {list(reference_nchw.shape)}")
    layout = min(errors, key=lambda k: errors[k])
    return layout, errors[layout]


def export_segment_onnx(module: SegmentWithExit, input_shape: tuple[int, ...], path: Path, opset: int) -> dict[str, int]:
    """ONNX of one segment through the export stage's path (flatten->Linear folding, simplification,
    max-pool and grouped-conv rewrites, checks)."""
    exported, folded = fold_flatten_linear(module.eval(), input_shape)
    rewrites = export_onnx(exported, input_shape, path, opset, getattr(exported, "export_scopes", None))
    if module.branch is not None:
        _name_features_output(path)
    return {**rewrites, "flatten_linear_folded": folded}


def _name_features_output(path: Path) -> None:
    """The exporter names the second output after its first consumer (`onnx::Conv_74`): onnx2tf
    silently drops such an output, so it gets a plain name (everywhere the graph uses it)."""
    import onnx

    from .onnx_export import check_onnx

    model = onnx.load(str(path))
    old = model.graph.output[1].name
    if old == FEATURES_NAME:
        return
    for node in model.graph.node:
        node.input[:] = [FEATURES_NAME if name == old else name for name in node.input]
        node.output[:] = [FEATURES_NAME if name == old else name for name in node.output]
    for value in [*model.graph.output, *model.graph.value_info]:
        if value.name == old:
            value.name = FEATURES_NAME
    onnx.save(model, str(path))
    check_onnx(path)


def check_onnx_segment(path: Path, module: SegmentWithExit, inputs: np.ndarray, tolerance: float) -> float:
    """Largest relative error of the ONNX segment's outputs (all of them) against torch."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    with torch.no_grad():
        reference = module.eval()(torch.from_numpy(inputs))
    reference = list(reference) if isinstance(reference, tuple) else [reference]
    got = [np.concatenate(parts) for parts in zip(*(session.run(None, {INPUT_NAME: x[None]}) for x in inputs))]
    by_rank = {r.dim(): r.numpy() for r in reference}
    error = max(relative_max_error(g, by_rank[g.ndim]) for g in got)
    if error > tolerance:
        raise PipelineError(f"export: ONNX segment {path.name} differs from torch by {error:.2e} (relative max-abs), "
                            f"above {tolerance:.0e}")
    return error


def convert_segment(onnx_path: Path, work: Path, precisions: list[str], sample_images01: np.ndarray,
                    calibration_nhwc: np.ndarray | None, plan: dict[str, Any], log_path: Path,
                    timeout: float) -> dict[str, Path]:
    """precision -> TFLite file of one segment (the export stage's converter, without keep_float:
    its layer globs name the whole model's layers)."""
    conversion = run_conversion(
        onnx_path, work, precisions, sample_images01, calibration_nhwc, io_type=plan.get("io_type", "int8"),
        per_channel=plan.get("per_channel", True), log_path=log_path, timeout=timeout,
    )
    if conversion.failed:
        raise PipelineError("export: early-exit segment " + "; ".join(
            f"{p} could not be converted ({m})" for p, m in conversion.failed.items()) + f"; full log: {log_path}")
    return conversion.files


def nhwc(x: torch.Tensor) -> np.ndarray:
    return x.permute(0, 2, 3, 1).contiguous().numpy().astype(np.float32)


def to_nchw(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
