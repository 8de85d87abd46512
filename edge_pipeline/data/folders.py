"""Datasets read from the user's disk: an ImageFolder tree and CIFAR-10's python batches.

The folder is listed by scan.py (symlink rules, hidden files, class-name checks, a cap on the file
count), every image used is checked and hashed by integrity.py before training (corrupt, truncated,
bomb images and train/val/test copies are caught up front), and images are opened by images.py.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ..errors import UserError
from ..ui import progress
from .bundle import DataBundle, random_shift_flip, split_indices, stratified_indices
from .cifar import load_cifar10_arrays
from .identity import cifar10_identity, folder_identity
from .images import open_image
from .integrity import check_images, find_leaks, leak_verdict
from .labels import shown
from .scan import ImageFile, ImageTree, print_warnings, scan_image_folder

STATS_SAMPLES = 512  # images used to estimate per-channel mean/std when the recipe gives none
MIN_PER_CLASS = 3  # a tree split into train/val/test needs one image of each class in each


class _ImageFiles(Dataset):
    """(RGB PIL image, label) for scanned image files, each opened with the checks of images.py."""

    def __init__(self, samples: list[tuple[ImageFile, int]]) -> None:
        self.samples = samples
        self.targets = [label for _, label in samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        file, label = self.samples[i]
        return open_image(file.path, "data.path"), label


# One split of an image folder: (the files, indices into them, labels of all the files).
_Source = tuple[_ImageFiles, np.ndarray, np.ndarray]

class _ArrayImages(Dataset):
    """(PIL image, label) from uint8 NHWC arrays (CIFAR-10)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray) -> None:
        self.images, self.targets = images, labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return Image.fromarray(self.images[i]), int(self.targets[i])


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


def _bundle(name, config, seed, sources, class_names, fingerprint: str) -> DataBundle:
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
        augment=random_shift_flip(max(1, size // 16)) if config.augment else None, fingerprint=fingerprint,
    )


def _limit(idx: np.ndarray, labels: np.ndarray, limit: int | None, seed: int) -> np.ndarray:
    if not limit or limit >= len(idx):
        return idx
    return np.sort(idx[stratified_indices(labels[idx], limit, seed)])


def load_imagefolder_bundle(config, seed: int) -> DataBundle:
    """`path/<class>/<image>`, split by seed; or `path/train|val|test/<class>/<image>` as given."""
    scan = scan_image_folder(config.path)
    print_warnings(scan.warnings)
    trees = scan.trees
    if scan.split_layout:
        names = trees["train"].classes
        for tree in trees.values():
            if tree.classes != names:
                raise UserError(
                    f"data.path: {shown(tree.path)} has classes {tree.classes}, but train has {names}; use the same class folders")
        bases = {split: _ImageFiles(tree.samples) for split, tree in trees.items()}
        labels = {split: np.asarray(base.targets) for split, base in bases.items()}
        tr, tr_labels = bases["train"], labels["train"]
        sources: dict[str, _Source] = {"train": (tr, np.arange(len(tr)), tr_labels)}
        if "val" in trees and "test" in trees:
            _check_tree(trees["train"], 1)
            sources["val"] = (bases["val"], np.arange(len(bases["val"])), labels["val"])
            sources["test"] = (bases["test"], np.arange(len(bases["test"])), labels["test"])
        else:  # one held-out folder: it is the test split; val comes out of train
            _check_tree(trees["train"], MIN_PER_CLASS)
            held = "val" if "val" in trees else "test"
            tr_idx, val_idx = _two_way(tr_labels, config.val_fraction, seed)
            sources["train"] = (tr, tr_idx, tr_labels)
            sources["val"] = (tr, val_idx, tr_labels)
            sources["test"] = (bases[held], np.arange(len(bases[held])), labels[held])
    else:
        tree = trees["all"]
        _check_tree(tree, MIN_PER_CLASS)
        names, folder = tree.classes, _ImageFiles(tree.samples)
        all_labels = np.asarray(folder.targets)
        train_idx, val_idx, test_idx = split_indices(all_labels, config.val_fraction, config.test_fraction, seed)
        sources = {"train": (folder, train_idx, all_labels), "val": (folder, val_idx, all_labels),
                   "test": (folder, test_idx, all_labels)}
    sources = {split: (base, _limit(idx, lab, config.limit, seed), lab) for split, (base, idx, lab) in sources.items()}
    _check_files(sources)
    return _bundle("imagefolder", config, seed, sources, list(names), folder_identity(scan, config, seed).fingerprint)


def _check_tree(tree: ImageTree, min_per_class: int) -> None:
    if len(tree.classes) < 2:
        raise UserError(f"data.path: {shown(tree.path)} has {len(tree.classes)} class folder(s); need at least 2")
    counts = np.bincount(tree.targets, minlength=len(tree.classes))
    if counts.min() < min_per_class:
        raise UserError(
            f"data.path: class {tree.classes[int(counts.argmin())]!r} in {shown(tree.path)} has {counts.min()} image(s); "
            f"need at least {min_per_class} per class to split train/val/test"
        )


def _check_files(sources: dict[str, _Source]) -> None:
    """Decode and hash every image the splits use; refuse corrupt files and leaked splits."""
    splits = {split: [base.samples[int(i)][0] for i in idx] for split, (base, idx, _) in sources.items()}
    files = list(dict.fromkeys(f for split_files in splits.values() for f in split_files))
    with progress("checking images", total=len(files)) as bar:
        digests = check_images(files, "data.path", bar)
    held_out = len(splits["val"]) + len(splits["test"])
    warning = leak_verdict(find_leaks(splits, digests), held_out, "data.path")
    if warning:
        print_warnings([warning])


def _two_way(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    a, b = train_test_split(np.arange(len(labels)), test_size=fraction, stratify=labels, random_state=seed)
    return np.sort(a), np.sort(b)


def load_cifar10_bundle(config, seed: int) -> DataBundle:
    arrays = load_cifar10_arrays(config.path)
    train = _ArrayImages(arrays.train_images, arrays.train_labels)
    test = _ArrayImages(arrays.test_images, arrays.test_labels)
    labels, test_labels = arrays.train_labels, arrays.test_labels
    tr, va = _two_way(labels, config.val_fraction, seed)
    sources = {
        "train": (train, _limit(tr, labels, config.limit, seed), labels),
        "val": (train, _limit(va, labels, config.limit, seed), labels),
        "test": (test, _limit(np.arange(len(test)), test_labels, config.limit, seed), test_labels),
    }
    return _bundle("cifar10", config, seed, sources, arrays.classes, cifar10_identity(config, seed).fingerprint)
