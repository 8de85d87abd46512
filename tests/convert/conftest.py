"""Real conversions shared by the convert tests: each onnx2tf run costs ~10-20 s (TensorFlow import),
so each model is converted once per session and the tests read the files."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

ALL_PRECISIONS = ["float32", "float16", "dynamic_int8", "int8", "int16x8"]
SIZE = 12


def tiny_cnn():
    """Conv-BN-ReLU, a padded max pool (as in ResNet's stem), Conv-BN-Hardswish (MobileNetV3's
    activation, which int16x8 has no kernel for), global pooling and a linear head; BN statistics
    set from data (see below)."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(3, 2, 1),
        nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.Hardswish(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4),
    )
    # Random weights, but BatchNorm statistics estimated on random inputs, so activations have the
    # ranges of a trained network rather than shrinking layer after layer.
    net.train()
    with torch.no_grad():
        for _ in range(4):
            net(torch.randn(32, 3, SIZE, SIZE))
    return net.eval()


def normalized_inputs(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, SIZE, SIZE, 3)).astype(np.float32)


@pytest.fixture(scope="session")
def all_precisions(tmp_path_factory):
    """tiny_cnn converted to every precision (int8 io), with its ONNX model and inputs."""
    from edge_pipeline.convert.onnx_export import export_onnx
    from edge_pipeline.convert.tflite_convert import run_conversion

    out = tmp_path_factory.mktemp("all-precisions")
    net = tiny_cnn()
    onnx_path = out / "model.onnx"
    assert export_onnx(net, (1, 3, SIZE, SIZE), onnx_path)["maxpools_zero_padded"] == 1
    calibration = normalized_inputs(64, seed=1)
    conversion = run_conversion(onnx_path, out, ALL_PRECISIONS, np.clip(calibration * 0.25 + 0.5, 0, 1), calibration)
    return SimpleNamespace(net=net, onnx=onnx_path, files=conversion.files, conversion=conversion,
                           calibration=calibration, inputs=normalized_inputs(32, seed=2), out=out)


class HardNet:
    """Factory for a small digits classifier whose first conv has one channel with a ~1000x range.

    Float behaviour is unchanged (ReLU is positively homogeneous and conv2 divides that channel's
    weights by the same factor), but per-tensor int8 activations give the other channels of conv1's
    output almost no levels: the classic "one outlier channel" int8 failure.
    """

    FACTOR = 1000.0

    @staticmethod
    def build():
        import torch
        from torch import nn

        class Net(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
                self.relu1 = nn.ReLU()
                self.pool = nn.MaxPool2d(2)
                self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
                self.relu2 = nn.ReLU()
                self.pool2 = nn.MaxPool2d(2)
                self.fc = nn.Linear(16 * 4 * 4, 10)

            def forward(self, x):
                x = self.pool(self.relu1(self.conv1(x)))
                return self.fc(torch.flatten(self.pool2(self.relu2(self.conv2(x))), 1))

        return Net()

    @classmethod
    def make_hard(cls, net) -> None:
        import torch

        with torch.no_grad():
            net.conv1.weight[0] *= cls.FACTOR
            net.conv1.bias[0] *= cls.FACTOR
            net.conv2.weight[:, 0] /= cls.FACTOR


def train_briefly(net, data, epochs: int = 4) -> None:
    import torch

    torch.manual_seed(0)
    optimizer = torch.optim.Adam(net.parameters(), lr=0.01)
    net.train()
    for _ in range(epochs):
        for x, y in data.loader("train", shuffle=True, seed=0):
            loss = torch.nn.functional.cross_entropy(net(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    net.eval()


@pytest.fixture(scope="session")
def hard_model(tmp_path_factory, tiny_data):
    """HardNet trained on 16 px digits (~93% after 4 epochs), made hard, converted to float32 + int8 (uint8 io) with
    auto_keep_float: 1. The plain int8 file is kept as model_int8_full.tflite."""
    from edge_pipeline.convert.nhwc import fold_flatten_linear
    from edge_pipeline.convert.onnx_export import export_onnx
    from edge_pipeline.convert.tflite_convert import run_conversion
    from edge_pipeline.evaluation import predict

    out = tmp_path_factory.mktemp("hard")
    net = HardNet.build()
    train_briefly(net, tiny_data)
    before, labels = predict(net, tiny_data.loader("test", batch_size=512))
    HardNet.make_hard(net)
    after, _ = predict(net, tiny_data.loader("test", batch_size=512))
    onnx_path = out / "model.onnx"
    exported, _ = fold_flatten_linear(net, tiny_data.input_shape)  # as the export stage does
    export_onnx(exported, tiny_data.input_shape, onnx_path, scopes=exported.export_scopes)
    calibration = np.concatenate([x for x, _ in tiny_data.batches("train", limit=128)]).transpose(0, 2, 3, 1)
    mean, std = np.float32(tiny_data.mean[0]), np.float32(tiny_data.std[0])
    conversion = run_conversion(onnx_path, out, ["float32", "int8"], calibration * std + mean, calibration,
                                io_type="uint8", auto_keep_float=1)
    return SimpleNamespace(
        net=net, onnx=onnx_path, files=conversion.files, conversion=conversion, data=tiny_data,
        reference=after.numpy(), labels=labels.numpy(),
        accuracy_before=float((before.argmax(1) == labels).float().mean()),
        accuracy_after=float((after.argmax(1) == labels).float().mean()),
        inputs=tiny_data.sample("test", 32).permute(0, 2, 3, 1).numpy(),
    )
