"""Grouped convs that onnx2tf would take for depthwise ones are split per group before conversion."""

import numpy as np
import pytest
import torch
from torch import nn

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
