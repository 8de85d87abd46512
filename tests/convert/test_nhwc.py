"""Export-time rewrites: Flatten->Linear as a conv, and a non-global adaptive pool folded into it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edge_pipeline.convert.nhwc import fold_flatten_linear, pooling_matrix
from edge_pipeline.convert.onnx_export import compare_onnx_to_torch, export_onnx


class Head(nn.Module):
    """Conv features, an optional adaptive average pool, flatten, a 2-layer classifier."""

    def __init__(self, pool: tuple[int, int] | None) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(4))
        self.avgpool = nn.AdaptiveAvgPool2d(pool) if pool else nn.Identity()
        side = pool[0] if pool else 2
        self.classifier = nn.Sequential(nn.Linear(4 * side * side, 6), nn.ReLU(), nn.Linear(6, 3))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


@pytest.mark.parametrize("size_in, size_out", [(2, 7), (7, 7), (14, 7), (5, 3), (1, 4)])
def test_pooling_matrix_is_adaptive_avg_pool(size_in, size_out):
    x = torch.randn(2, 3, size_in)
    expected = nn.functional.adaptive_avg_pool1d(x, size_out)
    assert torch.allclose(x @ pooling_matrix(size_in, size_out).T, expected, atol=1e-6)


@pytest.mark.parametrize("pool", [None, (7, 7), (3, 3)])
def test_fold_is_exact_and_exports_without_the_pool(tmp_path, pool):
    torch.manual_seed(0)
    net = Head(pool).eval()
    shape = (1, 3, 8, 8)  # features end at 2x2: a 7x7 pool of it cannot be exported to ONNX as is
    folded, count = fold_flatten_linear(net, shape)
    assert count == 1 and folded.export_scopes == {"nhwc_fold_0": "classifier.0"}
    x = torch.randn(4, *shape[1:])
    assert torch.allclose(folded(x), net(x), atol=1e-5)
    modules = [type(m).__name__ for m in folded.modules()]
    assert "AdaptiveAvgPool2d" not in modules and "Linear" in modules  # the second Linear stays
    path = tmp_path / "model.onnx"
    export_onnx(folded, shape, path)
    assert compare_onnx_to_torch(net, path, x.numpy(), 1e-4) < 1e-5


def test_global_pool_is_left_alone():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)).eval()
    folded, count = fold_flatten_linear(net, (1, 3, 8, 8))
    assert count == 0 and folded is net
