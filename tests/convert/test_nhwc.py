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
        cells = pool[0] * pool[1] if pool else 4
        self.classifier = nn.Sequential(nn.Linear(4 * cells, 6), nn.ReLU(), nn.Linear(6, 3))

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


@pytest.mark.parametrize("image, pool, absorbed", [
    (32, (2, 2), False),  # an exit branch's pool: 8x8 -> 2x2 by whole factors stays a pool
    (16, (2, 4), False),  # 4x4 -> 2x4: a 2x1 average pool
    (32, (3, 3), True),  # 8x8 -> 3x3 bins unevenly: no plain average pool equals it
    (16, (4, 4), True),  # 4x4 -> 4x4: no smaller map to read
])
def test_a_shrinking_pool_stays_a_pool_unless_it_cannot(tmp_path, image, pool, absorbed):
    """Absorbing a 32x32 -> 2x2 pool into the conv made a 32x32 kernel (256x the weights, 10x the MACs
    of pool + Linear): only pools that no plain AvgPool2d equals are absorbed."""
    torch.manual_seed(0)
    net = Head(pool).eval()
    shape = (1, 3, image, image)  # features end at image / 4
    folded, count = fold_flatten_linear(net, shape)
    assert count == 1
    x = torch.randn(4, *shape[1:])
    assert torch.allclose(folded(x), net(x), atol=1e-5)
    convs = [m for m in folded.modules() if isinstance(m, nn.Conv2d) and m.out_channels == 6]
    assert [tuple(c.kernel_size) for c in convs] == [(image // 4,) * 2 if absorbed else pool]
    pools = [m for m in folded.modules() if isinstance(m, (nn.AvgPool2d, nn.AdaptiveAvgPool2d))]
    assert [type(m).__name__ for m in pools] == ([] if absorbed else ["AvgPool2d"])
    path = tmp_path / "model.onnx"
    export_onnx(folded, shape, path)
    assert compare_onnx_to_torch(net, path, x.numpy(), 1e-4) < 1e-5


def test_global_pool_is_left_alone():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)).eval()
    folded, count = fold_flatten_linear(net, (1, 3, 8, 8))
    assert count == 0 and folded is net
