"""Our small CNN family, sized for 32x32-ish inputs (digits, CIFAR-10, thumbnails).

Each builder takes (num_classes, in_channels, image_size, width) and returns a plain nn.Module made
of standard layers only, so every restructure/prune transform and ONNX/TFLite export applies.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def _ch(channels: int, width: float) -> int:
    return max(8, int(round(channels * width / 8)) * 8)


def conv_bn_relu(cin: int, cout: int, kernel: int = 3, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class VGGSmall(nn.Module):
    """3 stages of 2x (conv3x3-BN-ReLU) + max-pool (16/32/64 channels at width 1), then a flatten +
    2-layer FC classifier.

    The FC head over flattened features is deliberate: it is what `gap_head` replaces, and what
    a typical hand-made small classifier looks like.
    """

    def __init__(self, num_classes: int, in_channels: int, image_size: int, width: float = 1.0) -> None:
        super().__init__()
        if image_size % 8:
            raise ValueError(f"vgg_small needs image_size divisible by 8, got {image_size}")
        c1, c2, c3 = _ch(16, width), _ch(32, width), _ch(64, width)
        layers: list[nn.Module] = []
        cin = in_channels
        for cout in (c1, c2, c3):
            layers += conv_bn_relu(cin, cout) + conv_bn_relu(cout, cout) + [nn.MaxPool2d(2)]
            cin = cout
        self.features = nn.Sequential(*layers)
        side = image_size // 8
        hidden = _ch(128, width)
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(c3 * side * side, hidden), nn.ReLU(inplace=True), nn.Dropout(0.2),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        self.relu2 = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """He et al.'s CIFAR ResNet (6n+2 layers): 16/32/64 channels, global average pooling head."""

    def __init__(self, depth: int, num_classes: int, in_channels: int, image_size: int, width: float = 1.0) -> None:
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError("CIFAR ResNet depth must be 6n+2")
        blocks = (depth - 2) // 6
        widths = [_ch(c, width) for c in (16, 32, 64)]
        self.stem = nn.Sequential(*conv_bn_relu(in_channels, widths[0]))
        stages: list[nn.Module] = []
        cin = widths[0]
        for i, cout in enumerate(widths):
            stage = [BasicBlock(cin if b == 0 else cout, cout, 2 if (i > 0 and b == 0) else 1) for b in range(blocks)]
            stages.append(nn.Sequential(*stage))
            cin = cout
        self.layer1, self.layer2, self.layer3 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.fc(self.flatten(self.pool(x)))


class ConvNet5x5(nn.Module):
    """A LeNet-like net with 5x5 and 7x7 kernels: the input `decompose`/`factorize` work on."""

    def __init__(self, num_classes: int, in_channels: int, image_size: int, width: float = 1.0) -> None:
        super().__init__()
        c1, c2, c3 = _ch(32, width), _ch(64, width), _ch(96, width)
        self.features = nn.Sequential(
            *conv_bn_relu(in_channels, c1, 5), nn.MaxPool2d(2),
            *conv_bn_relu(c1, c2, 5), nn.MaxPool2d(2),
            *conv_bn_relu(c2, c3, 7),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(c3, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(self.pool(self.features(x))))


BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "vgg_small": VGGSmall,
    "resnet8": lambda *a, **k: CifarResNet(8, *a, **k),
    "resnet20": lambda *a, **k: CifarResNet(20, *a, **k),
    "convnet_5x5": ConvNet5x5,
}
