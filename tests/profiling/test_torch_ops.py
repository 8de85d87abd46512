"""torch_ops predicts the export's TFLite ops exactly: every model below is exported through the
project's own path (fold_flatten_linear + export_onnx + run_conversion, as the export stage does) and
the predicted signatures must equal the file's, op for op (as multisets), in float32 and int8."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from edge_pipeline.profiling.opsig import signatures_of_file
from edge_pipeline.profiling.torch_ops import TorchOp, UnsupportedLayer, torch_ops

LAYER_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")


def settle_batchnorm(net: nn.Module, shape: tuple[int, ...]) -> nn.Module:
    """BatchNorm statistics from random inputs, so int8 calibration sees realistic ranges."""
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.randn(8, *shape[1:]))
    return net.eval()


class ShuffleUnit(nn.Module):
    """ShuffleNet-style residual unit: 1x1 -> depthwise 3x3 -> 1x1, made grouped + shuffled below."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.expand, self.bn1, self.relu1 = nn.Conv2d(channels, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU()
        self.dw = nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden, bias=False)
        self.bn2 = nn.BatchNorm2d(hidden)
        self.project, self.bn3 = nn.Conv2d(hidden, channels, 1, bias=False), nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu1(self.bn1(self.expand(x)))
        return x + self.bn3(self.project(self.bn2(self.dw(y))))


def shuffle_net() -> nn.Module:
    """Grouped 1x1 convs (8 groups) + ChannelShuffle (compress/grouped.py) on an 8x8 map: BatchNorms after
    a shuffle stay MUL + ADD; grouped convs reading a residual Add (group == map width) are split per group
    by convert/grouped_conv.py; the first grouped conv reads a ReLU and stays one CONV_2D."""
    from edge_pipeline.compress.grouped import grouped_pointwise
    from edge_pipeline.compress.select import Selection

    net = nn.Sequential(
        nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        ShuffleUnit(16, 32), ShuffleUnit(16, 32),
        nn.Conv2d(16, 32, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10),
    )
    grouped_pointwise(net, Selection(min_channels=8), groups=8)
    return net


def exit_head_net() -> nn.Module:
    """An early-exit branch's shape: 1x1 conv, a 16x16 -> 2x2 adaptive pool (exported as a fixed
    AVERAGE_POOL_2D), flatten and a Linear (a 2x2 conv)."""
    return nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 16, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(64, 10))


def build(name: str) -> tuple[nn.Module, tuple[int, ...]]:
    from edge_pipeline.models import BaseSpec, build_model

    torch.manual_seed(0)
    net: nn.Module
    if name == "shuffle":
        net, shape = shuffle_net(), (1, 3, 16, 16)
    elif name == "exit_head":
        net, shape = exit_head_net(), (1, 3, 32, 32)
    elif name == "vgg_small+depthwise":  # the quickstart's restructure
        from edge_pipeline.compress.depthwise import depthwise_separable
        from edge_pipeline.compress.select import Selection

        net, shape = build_model(BaseSpec("vgg_small", 10, 1, 32)), (1, 1, 32, 32)
        depthwise_separable(net, Selection(min_channels=16))
    elif name.startswith("torchvision:"):
        net, shape = build_model(BaseSpec(name, 10, 3, 64)), (1, 3, 64, 64)
    else:
        net, shape = build_model(BaseSpec(name, 7, 3, 32, 0.5)), (1, 3, 32, 32)  # as tests/models does
    return settle_batchnorm(net, shape), shape


_EXPORTS: dict[str, tuple[nn.Module, tuple[int, ...], dict[str, Path]]] = {}


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    """name -> (model, input shape, {precision: .tflite}); each model converted once per session,
    float32 and int8 in one conversion."""

    def get(name: str):
        if name not in _EXPORTS:
            from edge_pipeline.convert.nhwc import fold_flatten_linear
            from edge_pipeline.convert.onnx_export import export_onnx
            from edge_pipeline.convert.tflite_convert import convert_to_tflite

            net, shape = build(name)
            out = tmp_path_factory.mktemp(name.replace(":", "_").replace("+", "_"))
            folded, _ = fold_flatten_linear(net, shape)  # as the export stage does
            export_onnx(folded, shape, out / "model.onnx", scopes=getattr(folded, "export_scopes", None))
            calibration = np.random.default_rng(1).standard_normal((32, shape[2], shape[3], shape[1])).astype(np.float32)
            files = convert_to_tflite(out / "model.onnx", out, ["float32", "int8"],
                                      np.clip(calibration * 0.25 + 0.5, 0, 1), calibration)
            _EXPORTS[name] = (net, shape, files)
        return _EXPORTS[name]

    return get


def mismatch(predicted: list[TorchOp], path: Path) -> str:
    want = Counter(s.key() for s in signatures_of_file(path))
    got = Counter(op.sig.key() for op in predicted)
    lines = [f"missing {n}x {k}" for k, n in (want - got).items()] + [f"extra {n}x {k}" for k, n in (got - want).items()]
    return "\n".join(lines)


ZOO = ["vgg_small", "resnet8", "resnet20", "convnet_5x5"]
RESTRUCTURED = ["vgg_small+depthwise", "shuffle", "exit_head"]
TORCHVISION = ["torchvision:mobilenet_v2", "torchvision:resnet18", "torchvision:mobilenet_v3_small"]


@pytest.mark.parametrize("name", ZOO + RESTRUCTURED + [pytest.param(n, marks=pytest.mark.slow) for n in TORCHVISION])
def test_predicted_ops_equal_the_exported_files(exported, name):
    net, shape, files = exported(name)
    for precision in ("float32", "int8"):
        predicted = torch_ops(net, shape, precision)
        assert mismatch(predicted, files[precision]) == "", f"{name} {precision}"


def test_every_layer_op_names_its_module_and_pads_name_their_conv():
    from edge_pipeline.models import BaseSpec, build_model

    net = build_model(BaseSpec("torchvision:mobilenet_v2", 10, 3, 64)).eval()
    ops = torch_ops(net, (1, 3, 64, 64), "int8")
    convs = {name for name, m in net.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    layer_ops = [op for op in ops if op.sig.op in LAYER_OPS]
    assert [op.layer for op in layer_ops] == [name for name, m in net.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert all(op.role == "layer" for op in layer_ops)
    pads = [(i, op) for i, op in enumerate(ops) if op.sig.op == "PAD"]
    assert len(pads) == 5  # the stem and the four stride-2 depthwise convs
    for i, pad in pads:
        assert pad.role == "pad" and pad.layer in convs
        assert ops[i + 1].layer == pad.layer and ops[i + 1].sig.inputs[0] == pad.sig.outputs[0]
    assert all(op.layer is None and op.role == "other" for op in ops if op.sig.op not in (*LAYER_OPS, "PAD"))


def test_a_linear_folded_into_a_conv_keeps_the_linear_s_name():
    from edge_pipeline.models import BaseSpec, build_model

    net = build_model(BaseSpec("vgg_small", 10, 3, 32, 0.5)).eval()
    ops = torch_ops(net, (1, 3, 32, 32), "float32")
    assert [(op.sig.op, op.layer) for op in ops[-2:]] == [("CONV_2D", "classifier.1"), ("FULLY_CONNECTED", "classifier.4")]


def test_a_padded_max_pool_s_pad_belongs_to_no_layer():
    from edge_pipeline.models import BaseSpec, build_model

    ops = torch_ops(build_model(BaseSpec("torchvision:resnet18", 10, 3, 64)).eval(), (1, 3, 64, 64), "float32")
    pool = next(i for i, op in enumerate(ops) if op.sig.op == "MAX_POOL_2D")
    assert ops[pool - 1].sig.op == "PAD" and ops[pool - 1].layer is None and ops[pool - 1].role == "other"
    assert ops[0].sig.op == "PAD" and ops[0].layer == "conv1" and ops[0].role == "pad"  # the 7x7 stem's padding


def test_an_unsupported_layer_is_named():
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Upsample(scale_factor=2))
    with pytest.raises(UnsupportedLayer, match=r"1 \(Upsample\)"):
        torch_ops(net, (1, 3, 8, 8), "float32")


def test_only_float32_and_int8_are_predicted():
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1))
    with pytest.raises(ValueError, match="float16"):
        torch_ops(net, (1, 3, 8, 8), "float16")
    assert issubclass(UnsupportedLayer, ValueError)


def test_an_untraceable_model_is_an_unsupported_layer():
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3)

        def forward(self, x):
            return self.conv(x) if x.sum() > 0 else x  # data-dependent control flow

    with pytest.raises(UnsupportedLayer, match="Branchy"):
        torch_ops(Branchy(), (1, 3, 8, 8), "float32")
