"""scikit-learn's bundled handwritten digits (1,797 8x8 images, 10 classes): real data, no download."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import TensorDataset

from .bundle import DataBundle, random_shift, split_indices
from .identity import digits_identity


def load_digits_bundle(config, seed: int) -> DataBundle:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.from_numpy(digits.images.astype(np.float32) / 16.0).unsqueeze(1)  # N,1,8,8 in [0,1]
    labels = digits.target.astype(np.int64)
    if config.limit:
        from .bundle import stratified_indices

        keep = np.sort(stratified_indices(labels, config.limit, seed))
        images, labels = images[keep], labels[keep]
    size = config.image_size
    if size != 8:
        images = torch.nn.functional.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    channels = config.in_channels
    if channels == 3:
        images = images.repeat(1, 3, 1, 1)
    train_idx, val_idx, test_idx = split_indices(labels, config.val_fraction, config.test_fraction, seed)
    if config.normalize:
        mean, std = _per_channel(config.normalize.mean, channels), _per_channel(config.normalize.std, channels)
    else:
        train = images[train_idx]
        mean = [float(train[:, c].mean()) for c in range(channels)]
        std = [float(train[:, c].std()) for c in range(channels)]
    m = torch.tensor(mean).view(1, -1, 1, 1)
    s = torch.tensor(std).view(1, -1, 1, 1)
    normalized = ((images - m) / s).contiguous()
    y = torch.from_numpy(labels)

    def subset(idx: np.ndarray) -> TensorDataset:
        return TensorDataset(normalized[idx], y[idx])

    return DataBundle(
        name="digits", train=subset(train_idx), val=subset(val_idx), test=subset(test_idx),
        class_names=[str(i) for i in range(10)], in_channels=channels, image_size=size, mean=mean, std=std,
        batch_size=config.batch_size, train_labels=labels[train_idx],
        augment=random_shift(max(1, size // 16)) if config.augment else None,
        fingerprint=digits_identity(config, seed).fingerprint,
    )


def _per_channel(values: list[float], channels: int) -> list[float]:
    return list(values) * channels if len(values) == 1 else list(values)
