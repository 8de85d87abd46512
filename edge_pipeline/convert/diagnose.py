"""Per-layer diagnosis: where a reduced-precision TFLite model departs from its float reference.

Both models run on the same inputs with every intermediate tensor preserved. Tensor names differ
between files (onnx2tf writes the float model, the TFLite quantizer the integer one), so ops are
matched by graph structure, looking through QUANTIZE/DEQUANTIZE: starting from the model inputs,
a float op matches the quantized op of the same type and output shape whose inputs are the
tensors already matched to its own inputs ("graph"). Where the structure cannot decide, the same
output tensor name ("name"), then the next op of that type and shape in execution order
("order"), is taken. The match is verified: the models' outputs must end up matched to each other.

Error of a matched tensor, over all samples:
- `error`: mean over channels (last axis) of RMS(q - f) / RMS(f) per channel, with a floor of
  0.1 x the median channel RMS. Per channel, because one channel with a huge range hides the
  loss of all the others in a whole-tensor measure, and that is the classic int8 failure.
- `added`: `error` minus the largest `error` of the op's inputs: what this op itself lost.
  Ranking by `added` names the layer that loses information, not every layer downstream of it.
- `rel_rmse` (whole tensor) and `cosine` (per sample, averaged) for reference.
"""

from __future__ import annotations

import fnmatch
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..artifacts import LIMIT_ONNX, check_regular_file, read_npy
from ..errors import UserError
from .inspect import CAST_OPS, Graph, Op, read_graph
from .runtime import load_interpreter, quantize_input, tensor_value

CHANNEL_FLOOR = 0.1  # x median channel RMS: dead channels do not divide by ~0
WEIGHT_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


# -- graph matching --------------------------------------------------------------------------------


@dataclass
class Node:
    """A compute op with QUANTIZE/DEQUANTIZE looked through: `inputs` are activation roots."""

    op: Op
    inputs: list[int]
    outputs: list[int]


def compute_nodes(graph: Graph) -> tuple[list[Node], dict[int, int], dict[int, int]]:
    """(compute nodes, activation tensor -> root tensor, cast-of-constant tensor -> constant tensor)."""
    root: dict[int, int] = {}
    const_source: dict[int, int] = {t.index: t.index for t in graph.tensors if t.constant}
    nodes = []
    for op in graph.ops:
        if op.name in CAST_OPS and len(op.inputs) == 1 and len(op.outputs) == 1:
            src = op.inputs[0]
            if src in const_source:
                const_source[op.outputs[0]] = const_source[src]
            else:
                root[op.outputs[0]] = root.get(src, src)
            continue
        inputs = [root.get(i, i) for i in op.inputs if i >= 0 and i not in const_source]
        nodes.append(Node(op, inputs, list(op.outputs)))
    return nodes, root, const_source


@dataclass
class Matching:
    pairs: list[tuple[Node, Node, str]]  # (float node, quantized node, method)
    tensor_map: dict[int, int]  # float root tensor -> quantized root tensor
    float_roots: dict[int, int]
    quant_roots: dict[int, int]
    unmatched_float: list[Node]
    unmatched_quant: list[Node]
    verified: bool
    notes: list[str]


def _shapes(graph: Graph, node: Node) -> list[list[int]]:
    return [graph.tensors[o].shape for o in node.outputs]


def _names(graph: Graph, node: Node) -> list[str]:
    return [graph.tensors[o].name for o in node.outputs]


def match_graphs(f: Graph, q: Graph) -> Matching:
    fnodes, froot, _ = compute_nodes(f)
    qnodes, qroot, _ = compute_nodes(q)
    tensor_map: dict[int, int] = {}
    notes = []
    if len(f.inputs) != len(q.inputs) or len(f.outputs) != len(q.outputs):
        raise UserError(
            f"{q.path}: {len(q.inputs)} inputs/{len(q.outputs)} outputs but the float model {f.path} has "
            f"{len(f.inputs)}/{len(f.outputs)}: these are not two versions of one network"
        )
    for a, b in zip(f.inputs, q.inputs):
        if f.tensors[a].shape != q.tensors[b].shape:
            raise UserError(f"{q.path}: input shape {q.tensors[b].shape} differs from {f.path}'s {f.tensors[a].shape}")
        tensor_map[froot.get(a, a)] = qroot.get(b, b)
    used: set[int] = set()
    last = -1
    pairs: list[tuple[Node, Node, str]] = []
    unmatched: list[Node] = []
    for node in fnodes:
        candidates = [
            (k, c) for k, c in enumerate(qnodes)
            if k not in used and c.op.name == node.op.name and _shapes(q, c) == _shapes(f, node)
        ]
        want = [tensor_map.get(t) for t in node.inputs]
        pick: tuple[int, Node] | None = None
        method = ""
        if candidates and None not in want:
            structural = [kc for kc in candidates if sorted(kc[1].inputs) == sorted(want)]  # type: ignore[type-var]
            if structural:
                pick, method = structural[0], "graph"
        if pick is None:
            named = [kc for kc in candidates if _names(q, kc[1]) == _names(f, node)]
            if named:
                pick, method = named[0], "name"
        if pick is None:
            later = [kc for kc in candidates if kc[0] > last]
            if later:
                pick, method = later[0], "order"
        if pick is None:
            unmatched.append(node)
            continue
        k, qnode = pick
        used.add(k)
        last = max(last, k)
        pairs.append((node, qnode, method))
        for a, b in zip(node.outputs, qnode.outputs):
            tensor_map[a] = b
    verified = True
    for a, b in zip(f.outputs, q.outputs):
        if tensor_map.get(froot.get(a, a)) != qroot.get(b, b):
            verified = False
            notes.append(f"model output {f.tensors[a].name!r} did not end up matched to {q.tensors[b].name!r}")
    unmatched_q = [c for k, c in enumerate(qnodes) if k not in used]
    if unmatched:
        notes.append(f"{len(unmatched)} float ops without a counterpart: " + ", ".join(sorted({n.op.name for n in unmatched})))
    if unmatched_q:
        notes.append(f"{len(unmatched_q)} quantized ops without a counterpart: " + ", ".join(sorted({n.op.name for n in unmatched_q})))
    return Matching(pairs, tensor_map, froot, qroot, unmatched, unmatched_q, verified, notes)


# -- layer names ------------------------------------------------------------------------------------


def onnx_layer(node_name: str) -> str:
    """The module path in torch's ONNX node names: one scope per module, named by its attribute,
    except that a container's child repeats the container ('layer1', 'layer1.0'):
    'layer1/layer1.0/conv1/Conv' -> 'layer1.0.conv1', 'features/features.3/features.3.3/Conv' ->
    'features.3.3', 'trunk_output/block1/block1-0/f/b/b.0/Conv' -> 'trunk_output.block1.block1-0.f.b.0'."""
    parts = [p for p in node_name.split("/") if p]
    if len(parts) < 2:
        return parts[0] if parts else node_name
    path: list[str] = []
    for part in parts[:-1]:  # the last part is the op (Conv, Gemm)
        if path and part.startswith(path[-1] + "."):
            path[-1] = part
        else:
            path.append(part)
    return ".".join(path)


def onnx_weights(onnx_path: str | Path) -> list[tuple[str, np.ndarray]]:
    """(layer name, sorted |weights|) for every weighted ONNX node: a layout-free fingerprint."""
    import onnx
    from onnx import numpy_helper

    check_regular_file(onnx_path, LIMIT_ONNX, "ONNX model")
    model = onnx.load(str(onnx_path))
    values = {i.name: i for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].HasField("t"):
            values[node.output[0]] = node.attribute[0].t
    out = []
    for node in model.graph.node:
        if node.op_type in WEIGHT_OPS and len(node.input) > 1 and node.input[1] in values:
            array = numpy_helper.to_array(values[node.input[1]]).astype(np.float32)
            if array.size > 1:
                out.append((onnx_layer(node.name), np.sort(np.abs(array.ravel()))))
    return out


def layer_names(graph: Graph, onnx_path: str | Path | None = None) -> dict[int, str]:
    """op index -> a readable, unique layer name.

    Weighted ops are named after the ONNX node whose weights they hold (so after the torch module);
    the rest after the layer that feeds them ('features.3/max_pool_2d'), or by type and position.
    """
    nodes, _, const_source = compute_nodes(graph)
    candidates = onnx_weights(onnx_path) if onnx_path and Path(onnx_path).is_file() else []
    taken: set[int] = set()
    names: dict[int, str] = {}
    producer_name: dict[int, str] = {}
    counts: Counter = Counter()
    for node in nodes:
        name = None
        weight = _weight_of(graph, node, const_source)
        if weight is not None:
            fingerprint = np.sort(np.abs(weight.ravel()))
            for k, (layer, ref) in enumerate(candidates):
                if k not in taken and ref.size == fingerprint.size and np.allclose(
                    ref, fingerprint, rtol=1e-3, atol=1e-6 * float(ref[-1] or 1.0)
                ):
                    taken.add(k)
                    name = layer
                    break
        if name is None:
            feeder = next((producer_name[i] for i in node.inputs if i in producer_name), None)
            kind = node.op.name.lower()
            name = f"{feeder}/{kind}" if feeder else f"{kind}_{counts[kind]}"
            counts[kind] += 1
        base, k = name, 1
        while name in names.values():
            k += 1
            name = f"{base}#{k}"
        names[node.op.index] = name
        for o in node.outputs:
            producer_name[o] = name
    return names


def _weight_of(graph: Graph, node: Node, const_source: dict[int, int]) -> np.ndarray | None:
    """The largest >= 2-D constant input of an op (its weights), as float."""
    best = None
    for i in node.op.inputs:
        if i < 0 or i not in const_source:
            continue
        t = graph.tensors[const_source[i]]
        if len(t.shape) >= 2 and (best is None or np.prod(t.shape) > np.prod(graph.tensors[best].shape)):
            best = const_source[i]
    return graph.constant(best) if best is not None else None


# -- running and measuring -------------------------------------------------------------------------


class _Accumulator:
    def __init__(self) -> None:
        self.ch_f2: np.ndarray | None = None
        self.ch_e2: np.ndarray | None = None
        self.rows = 0
        self.f2 = self.e2 = 0.0
        self.cosines: list[float] = []

    def add(self, f: np.ndarray, q: np.ndarray) -> None:
        f = f.astype(np.float64)
        q = q.astype(np.float64).reshape(f.shape)
        channels = f.shape[-1] if f.ndim else 1
        f2 = np.square(f).reshape(-1, channels).sum(0)
        e2 = np.square(q - f).reshape(-1, channels).sum(0)
        self.ch_f2 = f2 if self.ch_f2 is None else self.ch_f2 + f2
        self.ch_e2 = e2 if self.ch_e2 is None else self.ch_e2 + e2
        self.rows += f.size // channels
        self.f2 += float(f2.sum())
        self.e2 += float(e2.sum())
        nf, nq = np.linalg.norm(f), np.linalg.norm(q)
        self.cosines.append(1.0 if nf == nq == 0 else float(np.dot(f.ravel(), q.ravel()) / (nf * nq)) if nf and nq else 0.0)

    def result(self) -> dict[str, float]:
        assert self.ch_f2 is not None and self.ch_e2 is not None
        rms_f = np.sqrt(self.ch_f2 / self.rows)
        rms_e = np.sqrt(self.ch_e2 / self.rows)
        floor = CHANNEL_FLOOR * float(np.median(rms_f)) or CHANNEL_FLOOR * float(rms_f.mean()) or 1e-12
        error = float(np.mean(rms_e / np.maximum(rms_f, floor)))
        rel = float(np.sqrt(self.e2 / self.f2)) if self.f2 > 0 else (0.0 if self.e2 == 0 else float("inf"))
        return {"error": error, "rel_rmse": rel, "cosine": float(np.mean(self.cosines))}


def _details(interpreter) -> dict[int, dict]:
    return {d["index"]: d for d in interpreter.get_tensor_details()}


def _set_input(interpreter, sample: np.ndarray) -> None:
    detail = interpreter.get_input_details()[0]
    interpreter.set_tensor(detail["index"], quantize_input(sample[None], detail))


@dataclass
class LayerError:
    layer: str
    op: str
    shape: list[int]
    error: float
    added: float
    rel_rmse: float
    cosine: float
    method: str
    float_tensor: str
    quant_tensor: str
    float_op: int
    quant_op: int
    quant_dtype: str


@dataclass
class Diagnosis:
    float_model: str
    quant_model: str
    samples: int
    layers: list[LayerError]  # in execution order
    input_error: float
    float_ops: int
    quant_ops: int
    methods: dict[str, int]
    verified: bool
    notes: list[str] = field(default_factory=list)

    def ranked(self) -> list[LayerError]:
        return sorted(self.layers, key=lambda r: (-r.added, -r.error))

    def to_dict(self, top: int | None = None) -> dict[str, Any]:
        rows = self.ranked()[:top] if top else self.ranked()
        return {
            "float_model": self.float_model, "quant_model": self.quant_model, "samples": self.samples,
            "input_error": round(self.input_error, 6), "float_ops": self.float_ops, "quant_ops": self.quant_ops,
            "matched": len(self.layers), "methods": self.methods, "verified": self.verified, "notes": self.notes,
            "ranked": [{k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(r).items()} for r in rows],
        }


def diagnose(
    float_path: str | Path,
    quant_path: str | Path,
    inputs_nhwc: np.ndarray,
    onnx_path: str | Path | None = None,
) -> Diagnosis:
    """Run both models on `inputs_nhwc` (normalized float samples) and measure every matched layer."""
    f, q = read_graph(float_path), read_graph(quant_path)
    check_pair(f, q)
    matching = match_graphs(f, q)
    names = layer_names(f, onnx_path)
    fi = load_interpreter(float_path, preserve_all_tensors=True)
    qi = load_interpreter(quant_path, preserve_all_tensors=True)
    fd, qd = _details(fi), _details(qi)
    input_pairs = [(matching.float_roots.get(a, a), matching.quant_roots.get(b, b)) for a, b in zip(f.inputs, q.inputs)]
    tensor_pairs = input_pairs + [(a, b) for fn, qn, _ in matching.pairs for a, b in zip(fn.outputs, qn.outputs)]
    tensor_pairs = [(a, b) for a, b in tensor_pairs if a in fd and b in qd]
    stats = {pair: _Accumulator() for pair in tensor_pairs}
    samples = np.asarray(inputs_nhwc, np.float32)
    for sample in samples:
        _set_input(fi, sample)
        _set_input(qi, sample)
        fi.invoke()
        qi.invoke()
        for (a, b), acc in stats.items():
            acc.add(tensor_value(fi, fd[a]), tensor_value(qi, qd[b]))
    results = {pair: acc.result() for pair, acc in stats.items()}
    error_of = {a: results[(a, b)]["error"] for a, b in results}
    input_error = max((error_of.get(a, 0.0) for a, _ in input_pairs), default=0.0)
    layers = []
    for fnode, qnode, method in matching.pairs:
        a, b = fnode.outputs[0], qnode.outputs[0]
        if (a, b) not in results:
            continue
        r = results[(a, b)]
        upstream = max((error_of.get(i, 0.0) for i in fnode.inputs), default=0.0)
        layers.append(LayerError(
            layer=names.get(fnode.op.index, f"op{fnode.op.index}"), op=fnode.op.name, shape=f.tensors[a].shape,
            error=r["error"], added=max(0.0, r["error"] - upstream), rel_rmse=r["rel_rmse"], cosine=r["cosine"],
            method=method, float_tensor=f.tensors[a].name, quant_tensor=q.tensors[b].name,
            float_op=fnode.op.index, quant_op=qnode.op.index, quant_dtype=q.tensors[b].dtype,
        ))
    return Diagnosis(
        float_model=str(float_path), quant_model=str(quant_path), samples=len(samples), layers=layers,
        input_error=input_error, float_ops=len(compute_nodes(f)[0]), quant_ops=len(compute_nodes(q)[0]),
        methods=dict(Counter(m for _, _, m in matching.pairs)), verified=matching.verified, notes=matching.notes,
    )


def diagnosis_inputs(float_path: str | Path, inputs_path: str | Path | None, samples: int) -> tuple[np.ndarray, str]:
    """Inputs for `diagnose`: a .npy of NHWC normalized floats, or random normal ones of the model's
    input shape (real data is better: it has the activation ranges the model will see)."""
    if inputs_path is not None:
        path = Path(inputs_path)
        if not path.is_file():
            raise UserError(f"{path}: inputs file not found (a .npy of NHWC float inputs, normalized as in training)")
        inputs = check_input_samples(read_npy(path, what=".npy array of inputs"), float_path, path)[:samples]
        return inputs, f"{len(inputs)} inputs from {path}"
    graph = read_graph(float_path)
    shape = graph.tensors[graph.inputs[0]].shape[1:]
    inputs = np.random.default_rng(0).standard_normal((samples, *shape)).astype(np.float32)
    return inputs, f"{samples} random normal inputs (pass --inputs for real data)"


def check_input_samples(samples: np.ndarray, model: str | Path, source: str | Path) -> np.ndarray:
    """`samples` as float32 if they fit `model`'s first input (N samples of its NHWC shape, as
    normalized floats), else a UserError naming `source` and the expected shape."""
    graph = read_graph(model)
    expected = graph.tensors[graph.inputs[0]].shape
    wanted = f"(N, {', '.join(map(str, expected[1:]))}) float samples (NHWC, normalized as in training)"
    if samples.ndim != len(expected) or list(samples.shape[1:]) != expected[1:] or len(samples) == 0:
        raise UserError(f"{source}: shape {tuple(samples.shape)} does not fit {Path(model).name}, which expects {wanted}")
    if samples.dtype.kind != "f":
        raise UserError(f"{source}: dtype {samples.dtype} does not fit {Path(model).name}, which expects {wanted}; "
                        "normalize the pixels first")
    if not np.isfinite(samples).all():
        raise UserError(f"{source}: contains NaN or infinite values; {Path(model).name} expects {wanted}")
    return samples.astype(np.float32)


def check_pair(float_graph: Graph, quant_graph: Graph) -> None:
    """The float32 reference must come first: a reduced-precision first file (or two of them)
    would rank layers by the wrong reference."""
    first, second = precision_kind(float_graph), precision_kind(quant_graph)
    if first is None:
        return
    if second is None:
        raise UserError(f"diagnose: the files look swapped: {float_graph.path} is {first} and {quant_graph.path} is "
                        f"float32; swap them: edge-pipeline diagnose {quant_graph.path} {float_graph.path}")
    raise UserError(f"diagnose: {float_graph.path} is {first}, not float32: the first file must be the float32 "
                    "reference (model_float32.tflite of the same export)")


def precision_kind(graph: Graph) -> str | None:
    """None for a float32 model, else what makes it reduced: integer activations, int8 or float16 weights."""
    activations = {t.dtype for t in graph.tensors if not t.constant and t.scales}
    if activations & {"int8", "uint8", "int16"}:
        return f"quantized ({'/'.join(sorted(activations & {'int8', 'uint8', 'int16'}))} activations)"
    weights = {t.dtype for t in graph.tensors if t.constant}
    if "int8" in weights:
        return "dynamic-range quantized (int8 weights)"
    if "float16" in weights:
        return "float16 (float16 weights)"
    return None


def format_table(rows: Iterable[LayerError | dict], markdown: bool = True) -> str:
    """The ranked offenders as a markdown (or plain) table."""
    table = [asdict(r) if isinstance(r, LayerError) else r for r in rows]
    header = ["rank", "layer", "op", "added error", "error", "rel. RMSE", "cosine", "dtype", "match"]
    lines = []
    body = [
        [str(k + 1), r["layer"], r["op"], f"{r['added']:.4f}", f"{r['error']:.4f}", f"{r['rel_rmse']:.4f}",
         f"{r['cosine']:.4f}", r["quant_dtype"], r["method"]]
        for k, r in enumerate(table)
    ]
    if markdown:
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "|".join("---" for _ in header) + "|")
        lines += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in body]
    else:
        widths = [max(len(h), *(len(row[i]) for row in body)) if body else len(h) for i, h in enumerate(header)]
        lines.append("  ".join(h.ljust(w) for h, w in zip(header, widths)))
        lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in body]
    return "\n".join(lines)


def select_layers(names: Iterable[str], globs: Iterable[str]) -> tuple[list[str], list[str]]:
    """(layer names matching any glob, globs that matched nothing)."""
    names = list(names)
    chosen, unmatched = [], []
    for pattern in globs:
        hits = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
        if not hits:
            unmatched.append(pattern)
        chosen += [h for h in hits if h not in chosen]
    return chosen, unmatched
