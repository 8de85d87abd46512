"""torch -> ONNX with static shapes, checked by onnx.checker, strict shape inference and onnxruntime."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import PipelineError

INPUT_NAME = "input"
OUTPUT_NAME = "logits"


def export_onnx(module: nn.Module, input_shape: tuple[int, ...], path: Path, opset: int = 17) -> None:
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
    tf_safe_node_names(path)
    check_onnx(path)


def tf_safe_node_names(path: Path) -> None:
    """Drop the leading '/' torch gives node names ('/features/features.0/Conv').

    onnx2tf turns a grouped convolution (groups not 1 and not depthwise) into a Keras Conv2D layer
    named after the ONNX node, and Keras rejects names starting with '/' (onnx2tf 1.29.24: "OP name
    does not match the following pattern"). Node names are labels only; the graph is unchanged.
    """
    import onnx

    model = onnx.load(str(path))
    renamed = False
    for node in model.graph.node:
        if node.name.startswith("/"):
            node.name = node.name.lstrip("/")
            renamed = True
    if renamed:
        onnx.save(model, str(path))


def check_onnx(path: Path) -> None:
    """Full checker, strict shape inference, and every input/output dimension static."""
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
        model = onnx.load(str(path))
        onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    except Exception as exc:
        raise PipelineError(f"export: {path.name} fails the ONNX checker: {str(exc).splitlines()[0]}") from None
    for value in list(model.graph.input) + list(model.graph.output):
        dims = value.type.tensor_type.shape.dim
        symbolic = [d.dim_param or "?" for d in dims if not d.HasField("dim_value")]
        if symbolic:
            raise PipelineError(
                f"export: {value.name} has symbolic dimensions {symbolic}; TFLite needs static shapes "
                "(export with a fixed input shape)"
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
