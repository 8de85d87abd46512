"""Datasets read from the user's disk: an ImageFolder tree and CIFAR-10's python batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from ..errors import UserError
from .bundle import DataBundle, random_shift_flip, split_indices, stratified_indices

STATS_SAMPLES = 512  # images used to estimate per-channel mean/std when the recipe gives none


class _Transformed(Dataset):
    """Applies (to-tensor -> normalize) lazily; `base` yields PIL images or uint8 arrays."""

    def __init__(self, base: Dataset, indices: np.ndarray, transform) -> None:
        self.base, self.indices, self.transform = base, indices, transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        image, label = self.base[int(self.indices[i])]
        return self.transform(image), label


def _to_tensor(image_size: int, channels: int):
    from torchvision import transforms as T

    steps = [T.Grayscale(1)] if channels == 1 else [T.Lambda(lambda im: im.convert("RGB"))]
    steps += [T.Resize(image_size), T.CenterCrop(image_size), T.ToTensor()]
    return T.Compose(steps)


def _stats(base: Dataset, indices: np.ndarray, labels: np.ndarray, to_tensor, channels: int, seed: int):
    pick = indices[stratified_indices(labels[indices], STATS_SAMPLES, seed)]
    xs = torch.stack([to_tensor(base[int(i)][0]) for i in pick])
    return [float(xs[:, c].mean()) for c in range(channels)], [float(xs[:, c].std().clamp_min(1e-6)) for c in range(channels)]


def _bundle(name, config, seed, sources, class_names) -> DataBundle:
    """sources: {split: (base dataset, indices, labels-of-base)}; builds normalized splits."""
    from torchvision import transforms as T

    channels, size = config.in_channels, config.image_size
    to_tensor = _to_tensor(size, channels)
    train_base, train_idx, train_labels = sources["train"]
    if config.normalize:
        mean = list(config.normalize.mean) * (channels if len(config.normalize.mean) == 1 else 1)
        std = list(config.normalize.std) * (channels if len(config.normalize.std) == 1 else 1)
    else:
        mean, std = _stats(train_base, train_idx, train_labels, to_tensor, channels, seed)
    transform = T.Compose([to_tensor, T.Normalize(mean, std)])
    splits = {split: _Transformed(base, idx, transform) for split, (base, idx, _) in sources.items()}
    return DataBundle(
        name=name, train=splits["train"], val=splits["val"], test=splits["test"], class_names=class_names,
        in_channels=channels, image_size=size, mean=mean, std=std, batch_size=config.batch_size,
        train_labels=train_labels[train_idx],
        augment=random_shift_flip(max(1, size // 16)) if config.augment else None,
    )


def _limit(idx: np.ndarray, labels: np.ndarray, limit: int | None, seed: int) -> np.ndarray:
    if not limit or limit >= len(idx):
        return idx
    return np.sort(idx[stratified_indices(labels[idx], limit, seed)])


def load_imagefolder_bundle(config, seed: int) -> DataBundle:
    """`path/<class>/<image>`, split by seed; or `path/train|val|test/<class>/<image>` as given."""
    root = Path(config.path).expanduser()
    split_dirs = {s: root / s for s in ("train", "val", "test") if (root / s).is_dir()}
    if "train" in split_dirs and len(split_dirs) > 1:
        folders = {s: _image_folder(p) for s, p in split_dirs.items()}
        names = folders["train"].classes
        for s, f in folders.items():
            if f.classes != names:
                raise UserError(f"data.path: {split_dirs[s]} has classes {f.classes}, but train has {names}; use the same class folders")
        labels = {s: np.asarray(f.targets) for s, f in folders.items()}
        tr, tr_labels = folders["train"], labels["train"]
        held = "val" if "val" in folders else "test"
        sources = {"train": (tr, np.arange(len(tr)), tr_labels)}
        if "val" in folders and "test" in folders:
            sources["val"] = (folders["val"], np.arange(len(folders["val"])), labels["val"])
            sources["test"] = (folders["test"], np.arange(len(folders["test"])), labels["test"])
        else:  # one held-out folder: it is the test split; val comes out of train
            tr_idx, val_idx = _two_way(tr_labels, config.val_fraction, seed)
            sources["train"] = (tr, tr_idx, tr_labels)
            sources["val"] = (tr, val_idx, tr_labels)
            sources["test"] = (folders[held], np.arange(len(folders[held])), labels[held])
    else:
        folder = _image_folder(root)
        names, labels = folder.classes, np.asarray(folder.targets)
        tr, va, te = split_indices(labels, config.val_fraction, config.test_fraction, seed)
        sources = {"train": (folder, tr, labels), "val": (folder, va, labels), "test": (folder, te, labels)}
    sources = {s: (b, _limit(i, l, config.limit, seed), l) for s, (b, i, l) in sources.items()}
    return _bundle("imagefolder", config, seed, sources, list(names))


def _two_way(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    a, b = train_test_split(np.arange(len(labels)), test_size=fraction, stratify=labels, random_state=seed)
    return np.sort(a), np.sort(b)


def _image_folder(path: Path):
    from torchvision.datasets import ImageFolder

    try:
        folder = ImageFolder(str(path))
    except (FileNotFoundError, RuntimeError) as exc:
        raise UserError(f"data.path: {path}: {exc}; expected {path}/<class name>/<image>.png|jpg") from None
    counts = np.bincount(folder.targets, minlength=len(folder.classes))
    if len(folder.classes) < 2:
        raise UserError(f"data.path: {path} has {len(folder.classes)} class folder(s); need at least 2")
    if counts.min() < 3:
        raise UserError(
            f"data.path: class {folder.classes[int(counts.argmin())]!r} in {path} has {counts.min()} image(s); "
            "need at least 3 per class to split train/val/test"
        )
    return folder


def load_cifar10_bundle(config, seed: int) -> DataBundle:
    from torchvision.datasets import CIFAR10

    root = Path(config.path).expanduser()
    try:
        train = CIFAR10(str(root), train=True, download=False)
        test = CIFAR10(str(root), train=False, download=False)
    except RuntimeError:
        raise UserError(
            f"data.path: CIFAR-10 not found under {root}: put the extracted python version there, i.e. "
            f"{root}/cifar-10-batches-py/data_batch_1..5 and test_batch (from cifar-10-python.tar.gz); "
            "edge-pipeline never downloads"
        ) from None
    labels = np.asarray(train.targets)
    tr, va = _two_way(labels, config.val_fraction, seed)
    test_labels = np.asarray(test.targets)
    sources = {
        "train": (train, _limit(tr, labels, config.limit, seed), labels),
        "val": (train, _limit(va, labels, config.limit, seed), labels),
        "test": (test, _limit(np.arange(len(test)), test_labels, config.limit, seed), test_labels),
    }
    return _bundle("cifar10", config, seed, sources, list(train.classes))
