"""The data's identity: the fingerprint follows the files, the cheap record matches the loaded
bundle, and a pipeline reruns training when the data changes."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from edge_pipeline.data import build_data
from edge_pipeline.data.identity import data_identity
from edge_pipeline.pipeline import Pipeline
from edge_pipeline.recipe import DataConfig, load_recipe

from ..conftest import write
from .test_integrity import make_images, make_tree


def folder_config(root: Path, **kw) -> DataConfig:
    settings = {"image_size": 8, "normalize": {"mean": [0.5], "std": [0.25]}, **kw}
    return DataConfig(dataset="imagefolder", path=str(root), **settings)


def fingerprint(root: Path, seed: int = 0, **kw) -> str:
    return data_identity(folder_config(root, **kw), seed).fingerprint


def test_fingerprint_follows_the_files_and_nothing_else(tmp_path):
    root = make_tree(tmp_path / "ds")
    first = fingerprint(root)
    assert fingerprint(root) == first  # nothing changed
    copy = tmp_path / "elsewhere"
    shutil.copytree(root, copy)  # copy2 keeps sizes and mtimes: the same data in another place
    assert fingerprint(copy) == first
    assert fingerprint(root, batch_size=7) == first  # batching is not the data
    assert fingerprint(root, seed=1) != first and fingerprint(root, image_size=16) != first

    seen = {first}

    def changed() -> str:
        now = fingerprint(root)
        assert now not in seen
        seen.add(now)
        return now

    make_images(root / "a" / "extra", 1, seed=50)  # a file added
    changed()
    (root / "a" / "0.png").write_bytes((root / "b" / "0.png").read_bytes())  # a file changed
    changed()
    os.rename(root / "a" / "1.png", root / "a" / "renamed.png")  # a file renamed
    changed()
    make_tree(root, classes=("c",), seed=9)  # a class added
    changed()
    stat = (root / "b" / "2.png").stat()
    os.utime(root / "b" / "2.png", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # touched
    changed()


def test_digits_and_cifar_fingerprints(tmp_path):
    digits = data_identity(DataConfig(dataset="digits", image_size=16), 0)
    assert digits.fingerprint == data_identity(DataConfig(dataset="digits", image_size=16, batch_size=8), 0).fingerprint
    assert digits.fingerprint != data_identity(DataConfig(dataset="digits", image_size=16, limit=100), 0).fingerprint
    from edge_pipeline.errors import UserError

    with pytest.raises(UserError, match="cifar-10-batches-py"):
        data_identity(DataConfig(dataset="cifar10", path=str(tmp_path)), 0)


@pytest.mark.parametrize("layout", ["one_tree", "train_test", "train_val_test"])
@pytest.mark.parametrize("settings", [{}, {"val_fraction": 0.3, "test_fraction": 0.2}, {"limit": 20}])
def test_cheap_record_matches_the_loaded_bundle(tmp_path, layout, settings):
    root = tmp_path / "ds"
    if layout == "one_tree":
        make_tree(root, classes=("a", "b", "c"), per_class=13)
    else:
        make_tree(root / "train", classes=("a", "b", "c"), per_class=17, seed=1)
        make_tree(root / "test", classes=("a", "b", "c"), per_class=9, seed=2)
        if layout == "train_val_test":
            make_tree(root / "val", classes=("a", "b", "c"), per_class=8, seed=3)
    config = folder_config(root, **settings)
    bundle = build_data(config, seed=3)
    assert data_identity(config, 3).record == bundle.record()
    assert bundle.record()["classes"] == 3 and bundle.fingerprint


@pytest.mark.parametrize("settings", [{}, {"limit": 137, "val_fraction": 0.2, "test_fraction": 0.1}])
def test_cheap_record_matches_digits(settings):
    config = DataConfig(dataset="digits", image_size=8, **settings)
    bundle = build_data(config, seed=0)
    assert data_identity(config, 0).record == bundle.record()


def test_adding_a_class_folder_reruns_training(tmp_path):
    root = make_tree(tmp_path / "ds", classes=("a", "b"), per_class=8)
    recipe_path = write(tmp_path / "r.yaml", f"""\
        name: folder
        seed: 0
        data: {{dataset: imagefolder, path: {root}, image_size: 16, batch_size: 16}}
        model: {{arch: vgg_small, width: 0.25}}
        stages:
          - train: {{epochs: 1, lr: 0.05}}
        """)
    out = tmp_path / "run"

    def run() -> dict:
        Pipeline(load_recipe(recipe_path), out).run()
        return json.loads((out / "metrics.json").read_text())

    first = run()
    assert first["stages"][0]["status"] == "done"
    assert first["data"] == {
        "dataset": "imagefolder", "classes": 2, "samples": {"train": 10, "val": 3, "test": 3},
        "fingerprint": first["data"]["fingerprint"],
    }
    assert run()["stages"][0]["status"] == "cached"
    make_tree(root, classes=("c",), per_class=8, seed=5)
    third = run()
    assert third["stages"][0]["status"] == "done"  # retrained: the model now has 3 outputs
    assert third["data"]["classes"] == 3 and third["data"]["fingerprint"] != first["data"]["fingerprint"]
    structure = json.loads((out / "01-train" / "structure.json").read_text())
    assert structure["base"]["num_classes"] == 3


def test_identity_needs_neither_torch_nor_pillow(tmp_path):
    """The cache key is computed on every run, cached or not: it must stay cheap."""
    import subprocess
    import sys

    root = make_tree(tmp_path / "ds")
    code = (
        "import sys\n"
        "from edge_pipeline.data.identity import data_identity\n"
        "from edge_pipeline.recipe import DataConfig\n"
        f"print(data_identity(DataConfig(dataset='imagefolder', path={str(root)!r}), 0).record['samples'])\n"
        "print(sorted(m for m in ('torch', 'PIL', 'torchvision', 'tensorflow') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.splitlines()
    assert out == ["{'train': 8, 'val': 2, 'test': 2}", "[]"]


def test_calibration_folder_is_part_of_the_quantize_key(tmp_path):
    from edge_pipeline.stages.quantize import QuantizeConfig, QuantizeStage

    folder = tmp_path / "calib"
    make_images(folder, 3, seed=1)
    stage = QuantizeStage(QuantizeConfig(calibration_dir=str(folder)))
    before = stage.key_inputs(None, 0)
    assert stage.key_inputs(None, 0) == before
    make_images(folder / "more", 1, seed=2)
    assert stage.key_inputs(None, 0) != before
    assert QuantizeStage(QuantizeConfig()).key_inputs(None, 0) == {}
