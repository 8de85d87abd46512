"""Every precision converts, loads, has the dtypes it promises and stays close to torch.

Slow: the session fixture runs onnx2tf + five TFLite conversions once (~20 s).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edge_pipeline.convert.inspect import inspect_tflite
from edge_pipeline.convert.onnx_export import relative_max_error
from edge_pipeline.convert.runtime import load_interpreter, run_tflite

from .conftest import ALL_PRECISIONS

pytestmark = pytest.mark.slow

# Max |tflite - torch| / max |torch| on 32 random inputs. float32 is the 1e-4 contract.
TOLERANCE = {"float32": 1e-4, "float16": 5e-3, "dynamic_int8": 5e-2, "int8": 0.15, "int16x8": 0.05}
# (input dtype, activation dtypes that must appear, constant dtypes that must appear)
DTYPES = {
    "float32": ("float32", {"float32"}, {"float32"}),
    "float16": ("float32", {"float32"}, {"float16"}),
    "dynamic_int8": ("float32", {"float32"}, {"float32"}),
    "int8": ("int8", {"int8"}, {"int8", "int32"}),
    "int16x8": ("int16", {"int16"}, {"int8", "int64"}),
}


def torch_logits(net, inputs_nhwc: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return net(torch.from_numpy(inputs_nhwc).permute(0, 3, 1, 2)).numpy()


@pytest.mark.parametrize("precision", ALL_PRECISIONS)
def test_every_precision_loads_and_matches_torch_within_its_tolerance(all_precisions, precision):
    path = all_precisions.files[precision]
    assert path.name == f"model_{precision}.tflite"
    logits = run_tflite(load_interpreter(path), [all_precisions.inputs])
    reference = torch_logits(all_precisions.net, all_precisions.inputs)
    error = relative_max_error(logits, reference)
    assert error < TOLERANCE[precision], f"{precision}: relative max error {error:.2e}"
    agreement = float((logits.argmax(1) == reference.argmax(1)).mean())
    assert agreement >= (1.0 if precision in ("float32", "float16") else 0.8)


@pytest.mark.parametrize("precision", ALL_PRECISIONS)
def test_each_precision_has_the_promised_dtypes(all_precisions, precision):
    info = inspect_tflite(all_precisions.files[precision])
    input_dtype, activations, constants = DTYPES[precision]
    assert info["inputs"][0]["dtype"] == input_dtype
    assert activations <= set(info["activation_dtypes"])
    assert constants <= set(info["weight_dtypes"])
    assert info["transposes"] == 0 and info["flex_ops"] == []
    if precision in ("int8", "int16x8"):
        q = info["inputs"][0]["quantization"]
        assert q["scales"] == 1 and q["scale"] > 0
        assert info["quantized_tensors"] > 0


def test_int16_activations_are_far_finer_than_int8(all_precisions):
    """Both use int8 weights (whose error dominates the logits of this random-weight net), but
    activations in int16 carry 256x finer steps: compare the input tensor's quantization error."""
    from edge_pipeline.convert.diagnose import diagnose

    errors = {p: diagnose(all_precisions.files["float32"], all_precisions.files[p], all_precisions.inputs).input_error
              for p in ("int8", "int16x8")}
    assert 0 < errors["int16x8"] < errors["int8"] / 50


def test_reduced_precisions_are_smaller_where_weights_shrink(all_precisions):
    sizes = {p: all_precisions.files[p].stat().st_size for p in ALL_PRECISIONS}
    assert sizes["float16"] < sizes["float32"]
    assert sizes["int8"] < sizes["float32"]


def test_an_op_without_an_int16_kernel_stays_float_and_is_reported(all_precisions):
    assert all_precisions.conversion.float_fallback == {"int16x8": ["HARD_SWISH"]}
    assert all_precisions.conversion.failed == {}
    from edge_pipeline.convert.inspect import read_graph

    graph = read_graph(all_precisions.files["int16x8"])
    (swish,) = [op for op in graph.ops if op.name == "HARD_SWISH"]
    assert graph.tensors[swish.outputs[0]].dtype == "float32"


def test_conversion_reports_seconds_per_step(all_precisions):
    seconds = all_precisions.conversion.seconds
    assert set(seconds) == {"onnx2tf", *ALL_PRECISIONS}
    assert all(v >= 0 for v in seconds.values())


def test_uint8_io_type(hard_model):
    for name in ("model_int8.tflite", "model_int8_full.tflite"):
        info = inspect_tflite(hard_model.files["int8"].parent / name)
        assert info["inputs"][0]["dtype"] == "uint8" and info["outputs"][0]["dtype"] == "uint8"
