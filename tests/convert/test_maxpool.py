"""Padded max pools after a ReLU get an explicit zero Pad in the exported ONNX model (exact; int8-safe).

The int8 consequence of the -inf padding (a ~1e36 activation scale) is covered by the session
conversion in test_precisions.py, whose model has such a pool.
"""

from __future__ import annotations

import numpy as np
import onnx
import torch
from torch import nn

from edge_pipeline.convert.maxpool import zero_pad_maxpools
from edge_pipeline.convert.onnx_export import compare_onnx_to_torch, export_onnx


def test_relu_and_relu6_pools_are_rewritten_exactly(tmp_path):
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2, 1),
        nn.Conv2d(4, 4, 3, padding=1), nn.ReLU6(), nn.MaxPool2d(2, 2, 1),
        nn.Conv2d(4, 4, 1), nn.MaxPool2d(3, 1, 1),  # no ReLU before: -inf padding is kept
        nn.Flatten(), nn.Linear(4 * 5 * 5, 2),
    ).eval()
    path = tmp_path / "model.onnx"
    assert export_onnx(net, (1, 3, 16, 16), path)["maxpools_zero_padded"] == 2  # checked: valid, shapes static
    model = onnx.load(str(path))
    assert [n.op_type for n in model.graph.node].count("Pad") == 2
    pools = [n for n in model.graph.node if n.op_type == "MaxPool"]
    pads = [list(next(a.ints for a in n.attribute if a.name == "pads")) for n in pools]
    assert pads == [[0, 0, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1]]
    inputs = np.random.default_rng(0).standard_normal((8, 3, 16, 16)).astype(np.float32)
    assert compare_onnx_to_torch(net, path, inputs, 1e-5) < 1e-6


def test_unpadded_pools_are_left_alone(tmp_path):
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 3 * 3, 2)).eval()
    path = tmp_path / "model.onnx"
    assert export_onnx(net, (1, 3, 8, 8), path)["maxpools_zero_padded"] == 0
    assert zero_pad_maxpools(onnx.load(str(path))) == 0
