"""torch -> ONNX with static shapes, checked by onnx.checker, strict shape inference and onnxruntime."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..artifacts import LIMIT_ONNX, check_regular_file
from ..errors import PipelineError

INPUT_NAME = "input"
OUTPUT_NAME = "logits"


def export_onnx(
    module: nn.Module, input_shape: tuple[int, ...], path: Path, opset: int = 17, scopes: dict[str, str] | None = None
) -> dict[str, int]:
    """Export with a static input shape, then make the graph what onnx2tf converts best, and check it:
    - onnxsim folds shape arithmetic into constants (ShuffleNet's channel split is Slice(Shape*k));
    - node names lose their leading '/', which onnx2tf's SavedModel writer rejects for some ops
      (RegNet's grouped convs), and export-time module names map back to the model's (`scopes`);
    - padded max pools after a ReLU pad with zeros (see maxpool.py);
    - grouped convs onnx2tf would take for depthwise ones are split per group (see grouped_conv.py).
    Returns what changed: {"simplified": 0/1, "maxpools_zero_padded": n, "grouped_convs_split": n}."""
    import onnx

    from .grouped_conv import split_ambiguous_grouped_convs
    from .maxpool import zero_pad_maxpools

    module = module.eval()
    example = torch.zeros(input_shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        try:
            torch.onnx.export(
                module, (example,), str(path), opset_version=opset, input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME], do_constant_folding=True, dynamo=False,
            )
        except Exception as exc:
            raise PipelineError(f"export: torch.onnx.export failed: {str(exc).splitlines()[0]}") from None
    model = onnx.load(str(path))
    model, simplified = _simplify(model)
    for node in model.graph.node:
        node.name = "/".join((scopes or {}).get(part, part) for part in node.name.split("/")).lstrip("/")
    padded = zero_pad_maxpools(model)
    split = split_ambiguous_grouped_convs(model)
    onnx.save(model, str(path))
    check_onnx(path)
    return {"simplified": int(simplified), "maxpools_zero_padded": padded, "grouped_convs_split": split}


def _simplify(model):
    """onnxsim's simplification when it succeeds and keeps the outputs (it checks on random inputs)."""
    try:
        import onnxsim

        simplified, ok = onnxsim.simplify(model)
    except Exception:  # an op onnxsim cannot run: keep the exporter's graph, the checks still apply
        return model, False
    return (simplified, True) if ok else (model, False)


def check_onnx(path: Path) -> None:
    """Full checker, strict shape inference, and every tensor shape static (inputs, outputs and
    every intermediate value): TFLite plans memory ahead and onnx2tf needs concrete shapes."""
    import onnx

    check_regular_file(path, LIMIT_ONNX, "ONNX model")
    try:
        onnx.checker.check_model(str(path), full_check=True)
        model = onnx.load(str(path))
        inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
    except Exception as exc:
        raise PipelineError(f"export: {path.name} fails the ONNX checker: {str(exc).splitlines()[0]}") from None
    producers = {out: node for node in inferred.graph.node for out in node.output}
    graph = inferred.graph
    for kind, values in (("input", graph.input), ("output", graph.output), ("tensor", graph.value_info)):
        for value in values:
            if not value.type.HasField("tensor_type"):
                continue
            shape = value.type.tensor_type.shape
            dims = shape.dim if value.type.tensor_type.HasField("shape") else None
            if dims is None and kind == "tensor":
                continue  # inference left this one unknown: not evidence of a dynamic shape
            symbolic = ["?"] if dims is None else [d.dim_param or "?" for d in dims if not d.HasField("dim_value")]
            if symbolic:
                node = producers.get(value.name)
                where = f" (output of {node.op_type} node {node.name!r})" if node is not None else ""
                raise PipelineError(
                    f"export: {kind} {value.name!r}{where} has symbolic dimensions {symbolic}; TFLite needs static "
                    "shapes: export with a fixed input shape and avoid shape-dependent ops (x.size(), dynamic reshape)"
                )


def onnxruntime_outputs(path: Path, inputs: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(None, {INPUT_NAME: x[None]})[0] for x in inputs])


@torch.no_grad()
def compare_onnx_to_torch(module: nn.Module, path: Path, inputs: np.ndarray, tolerance: float) -> float:
    """Max |onnx - torch| relative to max |torch| on real samples; raises above `tolerance`."""
    reference = module.eval()(torch.from_numpy(inputs)).numpy()
    got = onnxruntime_outputs(path, inputs)
    error = relative_max_error(got, reference)
    if error > tolerance:
        raise PipelineError(
            f"export: onnxruntime output differs from torch by {error:.2e} (relative max-abs), above {tolerance:.0e}; "
            "an op exported differently from its PyTorch semantics"
        )
    return error


def relative_max_error(got: np.ndarray, reference: np.ndarray) -> float:
    scale = float(np.max(np.abs(reference))) or 1.0
    return float(np.max(np.abs(got.astype(np.float64) - reference.astype(np.float64)))) / scale
