"""What every dataset provides to the stages: three splits, classes and normalization."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sized
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset


@dataclass
class DataBundle:
    name: str
    train: Dataset
    val: Dataset
    test: Dataset
    class_names: list[str]
    in_channels: int
    image_size: int
    mean: list[float]
    std: list[float]
    batch_size: int
    # Labels of the train split, for stratified sampling without decoding images.
    train_labels: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0, np.int64))
    # Training-time augmentation applied to a normalized NCHW batch (None: no augmentation).
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = field(default=None, repr=False)
    # The data's identity (see identity.py): part of every cache key, recorded in metrics.json.
    fingerprint: str = ""

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        """NCHW, batch 1: the static shape the model is exported with."""
        return (1, self.in_channels, self.image_size, self.image_size)

    def loader(self, split: str, shuffle: bool = False, seed: int = 0, batch_size: int | None = None) -> DataLoader:
        dataset = getattr(self, split)
        generator = torch.Generator().manual_seed(seed)
        return DataLoader(dataset, batch_size=batch_size or self.batch_size, shuffle=shuffle, generator=generator)

    def batches(self, split: str, limit: int | None = None, batch_size: int = 256) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Normalized NCHW float32 arrays and int labels, in order (for TFLite/ONNX evaluation)."""
        seen = 0
        for x, y in self.loader(split, batch_size=batch_size):
            if limit is not None and seen + len(x) > limit:
                x, y = x[: limit - seen], y[: limit - seen]
            yield x.numpy().astype(np.float32), y.numpy().astype(np.int64)
            seen += len(x)
            if limit is not None and seen >= limit:
                return

    def sample(self, split: str, n: int) -> torch.Tensor:
        """The first n normalized inputs of a split (deterministic): for checks that need real data."""
        xs = [x for x, _ in self.batches(split, limit=n)]
        return torch.from_numpy(np.concatenate(xs))

    def record(self) -> dict:
        """What metrics.json says about the data a run used (the DESIGN contract)."""
        return {
            "dataset": self.name, "classes": self.num_classes,
            "samples": {"train": split_length(self.train), "val": split_length(self.val),
                        "test": split_length(self.test)},
            "fingerprint": self.fingerprint,
        }

    def describe(self) -> dict:
        return {
            "dataset": self.name, "classes": self.num_classes, "train": split_length(self.train),
            "val": split_length(self.val), "test": split_length(self.test), "input_shape": list(self.input_shape),
            "mean": self.mean, "std": self.std,
        }


def split_length(dataset: Dataset) -> int:
    """Samples in a split. Every split here is map-style with a length; torch's Dataset type just
    does not declare __len__ (iterable datasets have none)."""
    assert isinstance(dataset, Sized), f"{type(dataset).__name__} has no length"
    return len(dataset)


def stratified_indices(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """n indices drawn per class in proportion to class frequency (at least one per class when n allows)."""
    labels = np.asarray(labels)
    n = min(n, len(labels))
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    quota = np.floor(counts / counts.sum() * n).astype(int)
    if n >= len(classes):
        quota = np.maximum(quota, 1)
    # Hand out what rounding left over to the largest classes first.
    order = np.argsort(-counts)
    i = 0
    while quota.sum() < n:
        c = order[i % len(order)]
        if quota[c] < counts[c]:
            quota[c] += 1
        i += 1
    while quota.sum() > n:
        c = order[i % len(order)]
        if quota[c] > 1:
            quota[c] -= 1
        i += 1
    picked = [rng.choice(np.flatnonzero(labels == cls), size=q, replace=False) for cls, q in zip(classes, quota)]
    out = np.concatenate(picked)
    rng.shuffle(out)
    return out


def split_indices(labels: np.ndarray, val_fraction: float, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Deterministic stratified train/val/test split of range(len(labels))."""
    from sklearn.model_selection import train_test_split

    index = np.arange(len(labels))
    rest, test = train_test_split(index, test_size=test_fraction, stratify=labels, random_state=seed)
    val_share = val_fraction / (1.0 - test_fraction)
    train, val = train_test_split(rest, test_size=val_share, stratify=labels[rest], random_state=seed)
    return np.sort(train), np.sort(val), np.sort(test)


def random_shift(max_shift: int) -> Callable[[torch.Tensor, torch.Generator], torch.Tensor]:
    """Augmentation: translate each image by up to max_shift pixels (zero padding in normalized space)."""

    def apply(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        n, _, h, w = x.shape
        padded = torch.nn.functional.pad(x, (max_shift,) * 4, mode="replicate")
        dx = torch.randint(0, 2 * max_shift + 1, (n,), generator=gen)
        dy = torch.randint(0, 2 * max_shift + 1, (n,), generator=gen)
        return torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(n)])

    return apply


def random_shift_flip(max_shift: int) -> Callable[[torch.Tensor, torch.Generator], torch.Tensor]:
    shift = random_shift(max_shift)

    def apply(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        x = shift(x, gen)
        flip = torch.rand(len(x), generator=gen) < 0.5
        x[flip] = x[flip].flip(-1)
        return x

    return apply
