"""CIFAR-10's python batches, read without running code from them.

The batches are pickles. torchvision's loader calls `pickle.load`, which runs whatever a crafted
file names; here the unpickler resolves only the numpy names an array needs (as torch's
`weights_only` does for tensors), so a hostile `data_batch_1` is an error, never code. Every file is
checked to be a regular file of a sane size first, and the content for the shapes CIFAR-10 has.
Torch-free.
"""

from __future__ import annotations

import io
import os
import pickle
import stat
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UserError
from .labels import check_class_names, shown

BATCH_FOLDER = "cifar-10-batches-py"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
META_FILE = "batches.meta"
ALL_FILES = (*TRAIN_FILES, TEST_FILE, META_FILE)
ROWS_PER_BATCH = 10_000
TRAIN_ROWS = ROWS_PER_BATCH * len(TRAIN_FILES)
MAX_BATCH_BYTES = 64 * 1024 * 1024  # a real batch is 31 MB
# What an ndarray pickle needs (numpy 1.x and 2.x names) and what Python 2/3 protocol-2 pickles use
# for bytes. None of them calls anything but numpy's array constructors.
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
}


@dataclass
class CifarArrays:
    train_images: np.ndarray  # N,32,32,3 uint8
    train_labels: np.ndarray  # N int64
    test_images: np.ndarray
    test_labels: np.ndarray
    classes: list[str]


class _ArraysOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"it refers to {module}.{name}, which a CIFAR batch never does")


def batch_folder(root: str | os.PathLike) -> Path:
    return Path(root).expanduser() / BATCH_FOLDER


def missing_error(root: str | os.PathLike) -> UserError:
    root = Path(root).expanduser()
    return UserError(
        f"data.path: CIFAR-10 not found under {shown(root)}: put the extracted python version there, i.e. "
        f"{shown(root)}/{BATCH_FOLDER}/data_batch_1..5 and test_batch (from cifar-10-python.tar.gz); "
        "edge-pipeline never downloads")


def load_cifar10_arrays(root: str | os.PathLike) -> CifarArrays:
    folder = batch_folder(root)
    if not all((folder / name).is_file() for name in ALL_FILES):
        raise missing_error(root)
    train = [_batch(folder / name) for name in TRAIN_FILES]
    test_images, test_labels = _batch(folder / TEST_FILE)
    return CifarArrays(
        np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train]), test_images, test_labels,
        _class_names(folder / META_FILE))


def _load(path: Path) -> dict:
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_BATCH_BYTES:
            raise UserError(f"data.path: {shown(path)} is not a CIFAR-10 batch (not a regular file of at most "
                            f"{MAX_BATCH_BYTES // 2**20} MiB); extract cifar-10-python.tar.gz again")
        raw = fh.read(MAX_BATCH_BYTES + 1)
    try:
        content = _ArraysOnly(io.BytesIO(raw), encoding="latin1").load()
    except Exception as exc:
        raise UserError(f"data.path: {shown(path)} is not a valid CIFAR-10 batch ({exc}); extract cifar-10-python.tar.gz again") from None
    if not isinstance(content, dict):
        raise UserError(f"data.path: {shown(path)} is not a valid CIFAR-10 batch (no dict inside); extract cifar-10-python.tar.gz again")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in content.items()}


def _batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    content = _load(path)
    data, labels = content.get("data"), content.get("labels")
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.shape == (ROWS_PER_BATCH, 3072)
            and isinstance(labels, list) and len(labels) == ROWS_PER_BATCH
            and all(isinstance(v, int) and 0 <= v < 10 for v in labels)):
        raise UserError(f"data.path: {shown(path)} does not hold {ROWS_PER_BATCH} 32x32 RGB images with labels 0..9; "
                        "extract cifar-10-python.tar.gz again")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy(), np.asarray(labels, np.int64)


def _class_names(path: Path) -> list[str]:
    names = _load(path).get("label_names")
    if not (isinstance(names, list) and len(names) == 10 and all(isinstance(n, (str, bytes)) for n in names)):
        raise UserError(f"data.path: {shown(path)} does not list 10 class names; extract cifar-10-python.tar.gz again")
    names = [n.decode("latin1") if isinstance(n, bytes) else n for n in names]
    check_class_names(names, f"data.path: {shown(path)}")
    return names
