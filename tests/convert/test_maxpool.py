"""Padded max pools after a ReLU get an explicit zero Pad in the ONNX model (exact; int8-safe).

The int8 consequence of the -inf padding (a ~1e36 activation scale) is covered by the session
conversion in test_precisions.py, whose model has such a pool.
"""

from __future__ import annotations

import numpy as np
import onnx
import torch
from torch import nn

from edge_pipeline.convert.maxpool import zero_pad_maxpools
from edge_pipeline.convert.onnx_export import check_onnx, compare_onnx_to_torch, export_onnx


def ops(path):
    return [n.op_type for n in onnx.load(str(path)).graph.node]


def test_relu_and_relu6_pools_are_rewritten_exactly(tmp_path):
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2, 1),
        nn.Conv2d(4, 4, 3, padding=1), nn.ReLU6(), nn.MaxPool2d(2, 2, 1),
        nn.Conv2d(4, 4, 1), nn.MaxPool2d(3, 1, 1),  # no ReLU before: -inf padding is kept
        nn.Flatten(), nn.Linear(4 * 5 * 5, 2),
    ).eval()
    path = tmp_path / "model.onnx"
    export_onnx(net, (1, 3, 16, 16), path)
    assert ops(path).count("Pad") == 0
    assert zero_pad_maxpools(path) == 2
    check_onnx(path)  # still valid, every shape static
    assert ops(path).count("Pad") == 2
    pools = [n for n in onnx.load(str(path)).graph.node if n.op_type == "MaxPool"]
    pads = [list(next(a.ints for a in n.attribute if a.name == "pads")) for n in pools]
    assert pads == [[0, 0, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1]]
    inputs = np.random.default_rng(0).standard_normal((8, 3, 16, 16)).astype(np.float32)
    assert compare_onnx_to_torch(net, path, inputs, 1e-5) < 1e-6


def test_nothing_to_rewrite_leaves_the_file_alone(tmp_path):
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 3 * 3, 2)).eval()
    path = tmp_path / "model.onnx"
    export_onnx(net, (1, 3, 8, 8), path)
    before = path.read_bytes()
    assert zero_pad_maxpools(path) == 0 and path.read_bytes() == before
