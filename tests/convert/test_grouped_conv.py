"""Grouped convs that onnx2tf would take for depthwise ones are split per group before conversion."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edge_pipeline.convert.grouped_conv import carries_nchw_shape, is_ambiguous_grouped_conv
from edge_pipeline.convert.onnx_export import export_onnx


class ResidualThenGrouped(nn.Module):
    """conv -> residual add -> 1x1 conv with 8 groups: on an 8x8 map onnx2tf 1.29 converts the
    grouped conv as a depthwise one (and then fails) unless it is split."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 64, 3, padding=1)
        self.body = nn.Conv2d(64, 64, 3, padding=1)
        self.grouped = nn.Conv2d(64, 128, 1, groups=8)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def forward(self, x):
        x = self.stem(x)
        return self.head(self.grouped(x + self.body(x)))


def export(size, tmp_path):
    torch.manual_seed(0)
    net = ResidualThenGrouped().eval()
    path = tmp_path / "m.onnx"
    return net, path, export_onnx(net, (1, 3, size, size), path)


def test_only_the_ambiguous_grouped_conv_is_split(tmp_path):
    import onnx

    _, path, changes = export(8, tmp_path)  # groups 8 == the 8x8 map: split (ORT vs torch checked by the test below)
    assert changes["grouped_convs_split"] == 1
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert ops.count("Split") == 1 and ops.count("Concat") == 1 and ops.count("Conv") == 2 + 8
    _, _, changes = export(16, tmp_path)  # 16x16: unambiguous, one grouped Conv stays
    assert changes["grouped_convs_split"] == 0


def test_split_graph_computes_the_same_in_onnxruntime(tmp_path):
    import onnxruntime as ort

    net, path, _ = export(8, tmp_path)
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    got = ort.InferenceSession(str(path)).run(None, {"input": x})[0]
    with torch.no_grad():
        assert np.allclose(got, net(torch.from_numpy(x)).numpy(), atol=1e-5)


@pytest.mark.slow  # one onnx2tf conversion (~20 s)
def test_split_model_converts_and_matches_torch(tmp_path):
    from edge_pipeline.convert.runtime import load_interpreter, run_tflite
    from edge_pipeline.convert.tflite_convert import convert_to_tflite

    net, path, _ = export(8, tmp_path)
    x = np.random.default_rng(0).standard_normal((4, 3, 8, 8)).astype(np.float32)
    tflite = convert_to_tflite(path, tmp_path, ["float32"], x.transpose(0, 2, 3, 1), None)["float32"]
    got = run_tflite(load_interpreter(tflite), [np.ascontiguousarray(x.transpose(0, 2, 3, 1))])
    with torch.no_grad():
        reference = net(torch.from_numpy(x)).numpy()
    assert np.abs(got - reference).max() / np.abs(reference).max() < 1e-4


# Ops between a residual Add (or a plain conv, the control) and a 1x1 conv with 8 groups on an 8x8
# map: name -> (the grouped conv's input from x (the stem's output) and y (the body conv's output),
# whether the conv must be split, how closely profiling.torch_ops predicts the file: "exact" signatures,
# op "types" only (the file runs an unfused activation between the Add and the split on the NCHW
# tensor, torch_ops on the NHWC one), or None (not mapped, or not predicted: see add_relu_concat)).
# Without the split, every "split" case crashed onnx2tf 1.29 or converted to DEPTHWISE_CONV_2D with
# wrong outputs (measured).
CHAINS = {
    "add_relu": (lambda x, y: F.relu(x + y), True, "exact"),  # the reported case
    "add_relu6": (lambda x, y: F.relu6(x + y), True, "exact"),
    "add_leaky_relu": (lambda x, y: F.leaky_relu(x + y, 0.1), True, None),
    "add_hardswish": (lambda x, y: F.hardswish(x + y), True, "types"),
    "add_sigmoid": (lambda x, y: torch.sigmoid(x + y), True, None),
    "add_silu": (lambda x, y: F.silu(x + y), True, None),
    "add_relu_times_constant": (lambda x, y: F.relu(x + y) * 0.5, True, None),
    # the file concatenates in NCHW (a TRANSPOSE per input), torch_ops predicts one TRANSPOSE after it
    "add_relu_concat": (lambda x, y: torch.cat([y, F.relu(x + y)], 1), True, None),
    # controls: the NCHW shape does not survive these, the grouped conv stays one CONV_2D
    "conv_relu": (lambda x, y: F.relu(y), False, "exact"),
    "add_maxpool": (lambda x, y: F.max_pool2d(x + y, 3, 1, 1), False, None),
    "add_times_conv": (lambda x, y: (x + y) * y, False, "exact"),
    "add_relu_conv": (lambda x, y: F.conv2d(F.relu(x + y), torch.full((16, 16, 1, 1), 0.05)), False, None),
}
# The ones a default test run converts (~10 s each): the reported case and the control.
QUICK = ("add_relu", "conv_relu")


class ChainThenGrouped(nn.Module):
    """conv -> conv -> `chain` -> 1x1 conv with 8 groups (8x8 maps, so group == the map's width)."""

    def __init__(self, chain: str) -> None:
        super().__init__()
        self.chain = CHAINS[chain][0]
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.body = nn.Conv2d(16, 16, 3, padding=1)
        channels = 32 if "concat" in chain else 16
        self.grouped = nn.Conv2d(channels, 32, 1, groups=8)

    def forward(self, x):
        x = self.stem(x)
        return self.grouped(self.chain(x, self.body(x)))


def chain_model(chain: str) -> nn.Module:
    torch.manual_seed(0)
    return ChainThenGrouped(chain).eval()


@pytest.mark.parametrize("chain", list(CHAINS))
def test_grouped_convs_are_split_exactly_where_the_nchw_shape_survives(tmp_path, chain):
    import onnxruntime as ort

    net = chain_model(chain)
    changes = export_onnx(net, (1, 3, 8, 8), tmp_path / "m.onnx")
    assert changes["grouped_convs_split"] == int(CHAINS[chain][1])
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    got = ort.InferenceSession(str(tmp_path / "m.onnx")).run(None, {"input": x})[0]
    with torch.no_grad():
        assert np.allclose(got, net(torch.from_numpy(x)).numpy(), atol=1e-5)


@pytest.mark.parametrize("chain", [c if c in QUICK else pytest.param(c, marks=pytest.mark.slow) for c in CHAINS])
def test_each_chain_converts_to_the_torch_function(tmp_path, chain):
    """Real onnx2tf conversion: float32 outputs within the export's tolerance (1e-4 relative), the
    split (slices + 8 CONV_2D) or the single grouped CONV_2D in the file, never a DEPTHWISE_CONV_2D,
    and profiling.torch_ops predicts the file's ops where it maps the model."""
    from edge_pipeline.convert.inspect import read_graph
    from edge_pipeline.convert.runtime import load_interpreter, run_tflite
    from edge_pipeline.convert.tflite_convert import convert_to_tflite
    from edge_pipeline.profiling.opsig import signatures_of_file
    from edge_pipeline.profiling.torch_ops import torch_ops

    net, (_, split, predicted_as) = chain_model(chain), CHAINS[chain]
    export_onnx(net, (1, 3, 8, 8), tmp_path / "m.onnx")
    x = np.random.default_rng(0).standard_normal((4, 8, 8, 3)).astype(np.float32)
    tflite = convert_to_tflite(tmp_path / "m.onnx", tmp_path, ["float32"], np.clip(x * 0.25 + 0.5, 0, 1), None)["float32"]
    got = run_tflite(load_interpreter(tflite), [x])
    with torch.no_grad():
        reference = net(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy().transpose(0, 2, 3, 1)
    assert got.shape == reference.shape
    assert np.abs(got - reference).max() / np.abs(reference).max() < 1e-4
    ops = Counter(op.name for op in read_graph(tflite).ops)
    convs = 2 + (8 if split else 1) + (1 if chain == "add_relu_conv" else 0)
    assert ops["CONV_2D"] == convs and ops["DEPTHWISE_CONV_2D"] == 0, dict(ops)
    if predicted_as is not None:
        key = (lambda sig: sig.key()) if predicted_as == "exact" else (lambda sig: sig.op)
        predicted = Counter(key(op.sig) for op in torch_ops(net, (1, 3, 8, 8), "float32"))
        assert predicted == Counter(key(sig) for sig in signatures_of_file(tflite))


def test_the_nchw_shape_is_carried_from_an_add_through_elementwise_ops_and_concat():
    assert carries_nchw_shape("Add", [False, False])
    assert carries_nchw_shape("Relu", [True]) and not carries_nchw_shape("Relu", [False])
    assert carries_nchw_shape("Mul", [True]) and carries_nchw_shape("Mul", [True, True])  # constant operands are left out
    assert not carries_nchw_shape("Mul", [True, False])  # SE gating: converted correctly
    assert carries_nchw_shape("Concat", [False, True])
    assert not any(carries_nchw_shape(op, [True]) for op in ("Conv", "MaxPool", "BatchNormalization", "GlobalAveragePool"))
    assert not carries_nchw_shape("Relu", [])


def test_only_a_group_equal_to_the_width_and_not_the_channels_is_ambiguous():
    assert is_ambiguous_grouped_conv(8, 64, 8, True)
    assert not is_ambiguous_grouped_conv(8, 64, 8, False)  # NHWC shape: onnx2tf reads the channels
    assert not is_ambiguous_grouped_conv(8, 64, 16, True)  # a 8x16 map converted correctly (W is last)
    assert not is_ambiguous_grouped_conv(8, 8, 8, True)  # depthwise: the same either way
    assert not is_ambiguous_grouped_conv(1, 64, 1, True)
