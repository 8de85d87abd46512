"""Datasets: deterministic stratified splits on real data, folders from disk, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edge_pipeline.data import build_data, calibration_batch, stratified_indices
from edge_pipeline.errors import UserError
from edge_pipeline.recipe import DataConfig


def _labels(dataset) -> np.ndarray:
    return np.array([int(dataset[i][1]) for i in range(len(dataset))])


def test_digits_splits_are_disjoint_stratified_and_deterministic(tiny_data):
    sizes = (len(tiny_data.train), len(tiny_data.val), len(tiny_data.test))
    assert sum(sizes) == 1797 and sizes[1] == sizes[2] == 270
    for split in ("val", "test"):
        counts = np.bincount(_labels(getattr(tiny_data, split)), minlength=10)
        assert counts.min() >= 26 and counts.max() <= 29  # ~27 per class
    again = build_data(DataConfig(dataset="digits", image_size=16), seed=0)
    assert torch.equal(tiny_data.test.tensors[0], again.test.tensors[0])
    other = build_data(DataConfig(dataset="digits", image_size=16), seed=1)
    assert not torch.equal(tiny_data.test.tensors[0], other.test.tensors[0])
    # No image is in two splits.
    train = {t.numpy().tobytes() for t in tiny_data.train.tensors[0]}
    assert not any(t.numpy().tobytes() in train for t in tiny_data.test.tensors[0])


def test_digits_are_normalized_upsampled_and_channel_replicated():
    data = build_data(DataConfig(dataset="digits", image_size=24, channels=3), seed=0)
    x = data.train.tensors[0]
    assert x.shape[1:] == (3, 24, 24)
    assert abs(float(x.mean())) < 1e-4 and abs(float(x.std()) - 1) < 1e-2
    assert data.input_shape == (1, 3, 24, 24) and data.num_classes == 10


def test_explicit_normalization_is_used():
    data = build_data(DataConfig(dataset="digits", image_size=8, normalize={"mean": [0.5], "std": [0.25]}), seed=0)
    assert data.mean == [0.5] and data.std == [0.25]
    assert float(data.train.tensors[0].min()) == pytest.approx(-2.0)


def test_stratified_indices_follow_class_frequencies():
    labels = np.array([0] * 80 + [1] * 20)
    idx = stratified_indices(labels, 10, seed=0)
    assert len(set(idx)) == 10
    assert np.bincount(labels[idx]).tolist() == [8, 2]
    assert np.array_equal(idx, stratified_indices(labels, 10, seed=0))


def test_calibration_batch_is_stratified_from_train(tiny_data):
    batch = calibration_batch(tiny_data, 50, seed=0)
    assert batch.shape == (50, 1, 16, 16)
    train = {t.numpy().tobytes() for t in tiny_data.train.tensors[0]}
    assert all(x.numpy().tobytes() in train for x in batch)


def _image_tree(root, classes=("cat", "dog", "owl"), per_class=6, size=20, seed=0):
    from PIL import Image

    rng = np.random.default_rng(seed)
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = (rng.random((size, size, 3)) * 60 + c * 90).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")


def test_imagefolder_single_tree_is_split(tmp_path):
    _image_tree(tmp_path / "imgs")
    config = DataConfig(dataset="imagefolder", path=str(tmp_path / "imgs"), image_size=16, val_fraction=0.2, test_fraction=0.2)
    data = build_data(config, seed=0)
    assert data.class_names == ["cat", "dog", "owl"]
    assert len(data.train) + len(data.val) + len(data.test) == 18
    x, y = data.test[0]
    assert x.shape == (3, 16, 16)
    assert len(data.mean) == 3 and all(s > 0 for s in data.std)


def test_imagefolder_with_train_and_test_folders(tmp_path):
    _image_tree(tmp_path / "ds" / "train", per_class=8)
    _image_tree(tmp_path / "ds" / "test", per_class=3, seed=1)  # other images than train's
    data = build_data(DataConfig(dataset="imagefolder", path=str(tmp_path / "ds"), image_size=8, channels=1), seed=0)
    assert len(data.test) == 9 and len(data.train) + len(data.val) == 24
    assert data.test[0][0].shape == (1, 8, 8)


def test_imagefolder_errors_name_the_path(tmp_path):
    (tmp_path / "one" / "a").mkdir(parents=True)
    with pytest.raises(UserError, match="data.path"):
        build_data(DataConfig(dataset="imagefolder", path=str(tmp_path / "one")), seed=0)


def test_cifar10_missing_files_say_where_to_put_them(tmp_path):
    with pytest.raises(UserError) as info:
        build_data(DataConfig(dataset="cifar10", path=str(tmp_path)), seed=0)
    assert "cifar-10-batches-py" in str(info.value) and "never downloads" in str(info.value)
