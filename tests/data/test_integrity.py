"""Hostile and broken image folders: symlink loops and escapes, leaked splits, bad images, bad class
names, a hostile CIFAR pickle. Each gives one clear error (exit 2) or a warning, never a traceback."""

from __future__ import annotations

import os
import pickle
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edge_pipeline.cli import main
from edge_pipeline.data import build_data, images, integrity, scan
from edge_pipeline.data.labels import labels_text
from edge_pipeline.data.scan import scan_image_folder, scan_images
from edge_pipeline.errors import UserError
from edge_pipeline.recipe import DataConfig

from ..conftest import write


def make_images(folder: Path, n: int, seed: int, size: int = 6, fmt: str = "png") -> list[Path]:
    """n distinct random RGB images (distinct seeds give distinct bytes)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        path = folder / f"{i}.{fmt}"
        Image.fromarray((rng.random((size, size, 3)) * 255).astype(np.uint8)).save(path)
        paths.append(path)
    return paths


def make_tree(root: Path, classes=("a", "b"), per_class: int = 6, seed: int = 0, fmt: str = "png") -> Path:
    for c, name in enumerate(classes):
        make_images(root / name, per_class, seed * 100 + c, fmt=fmt)
    return root


def folder_config(root: Path, **kw) -> DataConfig:
    settings = {"image_size": 8, "normalize": {"mean": [0.5], "std": [0.25]}, **kw}
    return DataConfig(dataset="imagefolder", path=str(root), **settings)


def sample_count(data) -> int:
    return len(data.train) + len(data.val) + len(data.test)


def png_claiming(width: int, height: int) -> bytes:
    """A tiny, valid-looking PNG whose header claims width x height: a decompression bomb's header."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


# -- symlinks ----------------------------------------------------------------------------------


def test_symlink_loop_does_not_multiply_images(tmp_path):
    root = make_tree(tmp_path / "ds", per_class=10)
    os.symlink("..", root / "a" / "loop")  # a/loop/a/loop/... would revisit everything forever
    os.symlink(root / "b", root / "a" / "second_path_to_b")
    found = scan_image_folder(root)
    assert len(found.trees["all"].samples) == 20
    assert any("symlink loop" in w for w in found.warnings)
    data = build_data(folder_config(root), seed=0)
    assert sample_count(data) == 20


def test_symlinks_leaving_the_root_are_skipped_with_a_warning(tmp_path):
    root = make_tree(tmp_path / "ds")
    outside = make_images(tmp_path / "elsewhere", 5, seed=9)
    os.symlink(tmp_path / "elsewhere", root / "a" / "more")  # folder outside the root
    os.symlink(outside[0], root / "b" / "stolen.png")  # file outside the root
    os.symlink(root / "a" / "0.png", root / "b" / "inside.png")  # inside the root: followed
    found = scan_image_folder(root)
    rels = {f.rel for f, _ in found.trees["all"].samples}
    assert "b/inside.png" in rels and not any("more" in r or "stolen" in r for r in rels)
    assert sum("outside" in w for w in found.warnings) == 2


def test_special_hidden_and_broken_entries_are_skipped(tmp_path):
    root = make_tree(tmp_path / "ds")
    os.mkfifo(root / "a" / "pipe.png")  # reading it would block forever
    os.symlink(root / "a" / "gone.png", root / "a" / "broken.png")
    (root / "a" / "._0.png").write_bytes(b"resource fork, not an image")
    make_images(root / ".ipynb_checkpoints", 3, seed=5)
    found = scan_image_folder(root)
    assert found.trees["all"].classes == ["a", "b"]
    assert len(found.trees["all"].samples) == 12
    assert any("not a regular file" in w for w in found.warnings) and any("broken symlink" in w for w in found.warnings)


def test_split_folder_symlinked_to_train_is_refused(tmp_path):
    root = tmp_path / "ds"
    make_tree(root / "train")
    os.symlink(root / "train", root / "test")
    with pytest.raises(UserError, match="same folder"):
        scan_image_folder(root)


def test_a_huge_folder_stops_with_a_clear_error(tmp_path, monkeypatch):
    root = make_tree(tmp_path / "ds", per_class=8)
    monkeypatch.setattr(scan, "MAX_SCANNED_ENTRIES", 10)
    with pytest.raises(UserError, match="more than 10 files and folders"):
        scan_image_folder(root)


# -- leaked splits ------------------------------------------------------------------------------


def split_layout(root: Path, held_out_per_class: int) -> Path:
    make_tree(root / "train", per_class=10, seed=1)
    make_tree(root / "val", per_class=held_out_per_class, seed=2)
    make_tree(root / "test", per_class=held_out_per_class, seed=3)
    return root


def copy_train_into_test(root: Path, n: int) -> None:
    for i in range(n):
        (root / "test" / "a" / f"copy{i}.png").write_bytes((root / "train" / "a" / f"{i}.png").read_bytes())


def test_few_duplicates_across_splits_only_warn(tmp_path, capsys):
    root = split_layout(tmp_path / "ds", held_out_per_class=50)  # 200 held-out images: 1 % is 2
    copy_train_into_test(root, 2)
    data = build_data(folder_config(root), seed=0)
    assert len(data.test) == 102
    assert "2 held-out image(s) are byte-identical" in capsys.readouterr().err


def test_many_duplicates_across_splits_are_an_error(tmp_path):
    root = split_layout(tmp_path / "ds", held_out_per_class=50)
    copy_train_into_test(root, 3)  # 3 of 203 > 1 %
    with pytest.raises(UserError) as info:
        build_data(folder_config(root), seed=0)
    message = str(info.value)
    assert "3 of 203 held-out images" in message and "test/a/copy0.png (test) = train/a/0.png (train)" in message
    assert "remove the copies" in message


def test_duplicates_in_one_tree_are_found_after_the_split(tmp_path):
    root = make_tree(tmp_path / "ds", per_class=10)
    for i in range(10):  # every image twice: the seeded split puts copies on both sides
        (root / "a" / f"dup{i}.png").write_bytes((root / "a" / f"{i}.png").read_bytes())
    with pytest.raises(UserError, match="byte-identical"):
        build_data(folder_config(root), seed=0)


def test_leak_policy_thresholds():
    leak = integrity.Leak("test", "t.png", "train", "x.png")
    assert integrity.leak_verdict([], 10, "data.path") is None
    assert "1 held-out" in integrity.leak_verdict([leak], 100, "data.path")
    with pytest.raises(UserError):
        integrity.leak_verdict([leak] * 2, 100, "data.path")  # 2 %
    with pytest.raises(UserError):
        integrity.leak_verdict([leak] * 6, 10_000, "data.path")  # more than 5 files


# -- bad images ------------------------------------------------------------------------------


def corrupt(path: Path) -> None:
    path.write_bytes(b"this is not an image at all" * 10)


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def empty(path: Path) -> None:
    path.write_bytes(b"")


def bomb(path: Path) -> None:
    path.write_bytes(png_claiming(100_000, 100_000))


@pytest.mark.parametrize("damage", [corrupt, truncate, empty, bomb])
@pytest.mark.parametrize("fmt", ["png", "jpg"])
def test_a_bad_image_is_one_error_naming_the_file(tmp_path, damage, fmt):
    root = make_tree(tmp_path / "ds", fmt=fmt, seed=7)
    bad = root / "b" / f"3.{fmt}"
    damage(bad)
    with pytest.raises(UserError) as info:
        build_data(folder_config(root), seed=0)
    assert str(bad) in str(info.value) and "\n" not in str(info.value)


def test_images_above_the_pixel_or_byte_limit_are_refused(tmp_path, monkeypatch):
    path = make_images(tmp_path, 1, seed=0, size=40)[0]
    monkeypatch.setattr(images, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(UserError, match="40x40 pixels, above the limit"):
        images.open_image(path, "data.path")
    monkeypatch.setattr(images, "MAX_IMAGE_PIXELS", 10_000)
    monkeypatch.setattr(images, "MAX_IMAGE_BYTES", 100)
    with pytest.raises(UserError, match="MiB limit"):
        images.open_image(path, "data.path")


def test_pillow_bomb_warning_is_an_error(tmp_path, monkeypatch):
    path = make_images(tmp_path, 1, seed=0, size=40)[0]
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow warns above this (1600 px)
    with pytest.raises(UserError, match="decompression bomb"):
        images.open_image(path, "data.path")


def test_bad_image_through_the_cli_is_exit_2_and_one_line(tmp_path, capsys):
    root = make_tree(tmp_path / "ds")
    truncate(root / "a" / "2.png")
    recipe = write(tmp_path / "r.yaml", f"""\
        name: bad-image
        data: {{dataset: imagefolder, path: {root}, image_size: 16}}
        model: {{arch: vgg_small, width: 0.25}}
        stages:
          - train: {{epochs: 1}}
        """)
    assert main(["run", str(recipe), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "a/2.png" in lines[0] and "Traceback" not in err


def test_calibration_dir_images_are_checked(tmp_path, tiny_data):
    from edge_pipeline.data.calibration import folder_calibration

    folder = tmp_path / "calib"
    make_images(folder, 6, seed=4, size=12)
    os.symlink("..", folder / "loop")
    batch, facts = folder_calibration(str(folder), tiny_data, 100, seed=0)
    assert batch.shape == (6, 1, 16, 16) and facts["files"] == 6
    bomb(folder / "3.png")
    with pytest.raises(UserError, match=r"calib/3\.png .*decompression bomb"):
        folder_calibration(str(folder), tiny_data, 100, seed=0)


# -- class names -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["new\nline", "tab\there", "esc\x1b[31m", "zero\u200bwidth", "bad\udcffbytes"])
def test_class_folders_that_cannot_be_a_label_line_are_refused(tmp_path, name):
    root = make_tree(tmp_path / "ds")
    make_images(root / name, 4, seed=3)
    with pytest.raises(UserError) as info:
        scan_image_folder(root)
    assert repr(name) in str(info.value) and "\n" not in str(info.value)


def test_labels_text_checks_names_and_the_model_outputs():
    assert labels_text(["cat", "dog"], 2) == "cat\ndog\n"
    with pytest.raises(UserError, match="labels.txt: class folder 'a\\\\nb'"):
        labels_text(["a\nb", "c"], 2)
    with pytest.raises(UserError, match="3 classes but the model has 2 outputs"):
        labels_text(["a", "b", "c"], 2)
    with pytest.raises(UserError, match="appears twice"):
        labels_text(["a", "a"], 2)


# -- CIFAR-10 pickles -------------------------------------------------------------------------


class _RunsCommand:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_hostile_cifar_batch_runs_no_code(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    marker = tmp_path / "pwned"
    for name in ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch", "batches.meta"):
        (folder / name).write_bytes(pickle.dumps({"data": _RunsCommand(marker)}))
    with pytest.raises(UserError, match="data_batch_1 is not a valid CIFAR-10 batch"):
        build_data(DataConfig(dataset="cifar10", path=str(tmp_path)), seed=0)
    assert not marker.exists()


def test_cifar_batches_with_arrays_load_and_are_shape_checked(tmp_path):
    from edge_pipeline.data import cifar

    path = tmp_path / "batch"
    rows = cifar.ROWS_PER_BATCH
    labels = [i % 10 for i in range(rows)]
    path.write_bytes(pickle.dumps({b"data": np.zeros((rows, 3072), np.uint8), b"labels": labels}, protocol=2))
    images_, labels_ = cifar._batch(path)
    assert images_.shape == (rows, 32, 32, 3) and labels_.tolist() == labels
    path.write_bytes(pickle.dumps({"data": np.zeros((3, 3072), np.uint8), "labels": [0, 1, 2]}))
    with pytest.raises(UserError, match="does not hold"):
        cifar._batch(path)


# -- scanning helpers ----------------------------------------------------------------------------


def test_scan_images_lists_files_recursively_in_name_order(tmp_path):
    make_images(tmp_path / "x" / "deep", 2, seed=1)
    make_images(tmp_path / "x", 2, seed=2)
    files, warnings = scan_images(tmp_path / "x", "test")
    assert [f.rel for f in files] == ["0.png", "1.png", "deep/0.png", "deep/1.png"] and warnings == []


def test_a_very_deep_tree_is_walked_without_recursion(tmp_path):
    folder = tmp_path / "deep"
    image = make_images(folder, 1, seed=1)[0].read_bytes()
    fd = os.open(folder, os.O_RDONLY)
    try:
        try:  # 1,500 nested folders, deeper than Python's recursion limit (made relative to each other)
            for _ in range(1500):
                os.mkdir("d", dir_fd=fd)
                fd, parent = os.open("d", os.O_RDONLY, dir_fd=fd), fd
                os.close(parent)
            with os.fdopen(os.open("x.png", os.O_WRONLY | os.O_CREAT, dir_fd=fd), "wb") as fh:
                fh.write(image)
        finally:
            os.close(fd)
        files, _ = scan_images(folder, "test")
        assert len(files) == 2 and files[-1].rel == "d/" * 1500 + "x.png"
    finally:
        remove_chain(folder)  # shutil.rmtree (and so pytest's cleanup) recurses: it cannot delete this


def remove_chain(folder: Path) -> None:
    """Delete folder/d/d/.../d without recursion: move each nested `d` up beside it, then delete flat folders."""
    flat = []
    current = folder
    while (current / "d").is_dir():
        target = folder.parent / f"flat{len(flat)}"
        os.rename(current / "d", target)
        flat.append(target)
        current = target
    for path in [folder, *flat]:
        shutil.rmtree(path)
