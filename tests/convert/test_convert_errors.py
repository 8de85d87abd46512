"""Conversion robustness: static shapes, ONNX checks, a crashing or failing converter, bad globs."""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from edge_pipeline.convert.onnx_export import check_onnx, compare_onnx_to_torch, export_onnx
from edge_pipeline.convert.tflite_convert import describe_failure, run_conversion, run_worker
from edge_pipeline.errors import PipelineError, UserError


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)).eval()


def test_symbolic_dimensions_are_rejected_before_conversion(tmp_path):
    path = tmp_path / "dynamic.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(small_net(), (torch.zeros(1, 3, 8, 8),), str(path), input_names=["input"],
                          output_names=["logits"], dynamic_axes={"input": {0: "batch", 2: "height"}}, dynamo=False)
    with pytest.raises(PipelineError, match=r"input 'input' has symbolic dimensions \['batch', 'height'\].*static"):
        check_onnx(path)


def test_static_export_passes_checks_and_matches_onnxruntime(tmp_path):
    path = tmp_path / "model.onnx"
    net = small_net()
    export_onnx(net, (1, 3, 8, 8), path)
    inputs = np.random.default_rng(0).standard_normal((4, 3, 8, 8)).astype(np.float32)
    assert compare_onnx_to_torch(net, path, inputs, 1e-4) < 1e-5
    other = small_net()
    with torch.no_grad():
        other[0].weight.mul_(2)
    with pytest.raises(PipelineError, match="onnxruntime output differs from torch"):
        compare_onnx_to_torch(other, path, inputs, 1e-4)


def test_a_crashing_converter_is_reported_with_its_phase(tmp_path):
    crash = "import os, signal; print('@@step int8', flush=True); os.kill(os.getpid(), signal.SIGSEGV)"
    with pytest.raises(PipelineError) as info:
        run_worker([sys.executable, "-c", crash], tmp_path, tmp_path / "convert.log", timeout=60)
    message = str(info.value)
    assert "crashed (SIGSEGV) during int8" in message and str(tmp_path / "convert.log") in message


def test_bad_input_found_by_the_worker_is_a_user_error(tmp_path):
    script = ("import json, sys; print('@@error ' + json.dumps({'kind': 'input', 'message': 'keep_float: no layer "
              "matches \\'x*\\''}), flush=True); sys.exit(3)")
    with pytest.raises(UserError, match="export: keep_float: no layer matches 'x\\*'"):
        run_worker([sys.executable, "-c", script], tmp_path, tmp_path / "convert.log", timeout=60)


def test_failure_description_names_the_onnx_op():
    log = ("\x1b[32mINFO:\x1b[0m onnx_op_type: Conv onnx_op_name: /features/features.0/Conv\n"
           "\x1b[31mERROR:\x1b[0m The trace log is below.\nValueError: Dimensions must be equal\n"
           "\x1b[31mERROR:\x1b[0m onnx_op_name: wa/features/features.3/Conv\n")
    text = describe_failure(log, 1, "onnx2tf")
    assert text.startswith("the converter exited with code 1 during onnx2tf")
    assert "at ONNX op wa/features/features.3/Conv" in text and "ValueError: Dimensions must be equal" in text


def _mystery_op_model(path):
    import onnx
    from onnx import TensorProto, helper

    node = helper.make_node("MysteryOp", ["input"], ["logits"], name="/head/MysteryOp", domain="com.example")
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3, 8, 8])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    onnx.save(model, str(path))


@pytest.mark.slow
def test_an_op_onnx2tf_cannot_convert_is_named_and_the_parent_survives(tmp_path):
    onnx_path = tmp_path / "mystery.onnx"
    _mystery_op_model(onnx_path)
    images = np.random.default_rng(0).random((4, 8, 8, 3), dtype=np.float32)
    with pytest.raises(PipelineError) as info:
        run_conversion(onnx_path, tmp_path / "out", ["float32"], images, None, log_path=tmp_path / "convert.log")
    message = str(info.value)
    assert "during onnx2tf" in message and "MysteryOp" in message


@pytest.mark.slow
def test_keep_float_glob_matching_nothing_lists_the_layers(tmp_path):
    net = small_net()
    onnx_path = tmp_path / "model.onnx"
    export_onnx(net, (1, 3, 8, 8), onnx_path)
    calibration = np.random.default_rng(0).standard_normal((16, 8, 8, 3)).astype(np.float32)
    with pytest.raises(UserError) as info:
        run_conversion(onnx_path, tmp_path / "out", ["float32", "int8"], np.clip(calibration, 0, 1), calibration,
                       keep_float=["features.*"])
    message = str(info.value)
    assert "no layer matches 'features.*'" in message and "layers are: 0, " in message


def test_a_hanging_converter_is_stopped_at_the_time_limit(tmp_path):
    hang = "import time; print('@@step onnx2tf', flush=True); time.sleep(60)"
    with pytest.raises(PipelineError, match=r"took longer than 1s and was stopped during onnx2tf"):
        run_worker([sys.executable, "-c", hang], tmp_path, tmp_path / "convert.log", timeout=1)
