"""Hostile image folders for `data: {dataset: imagefolder}` (and CIFAR-10's pickled batches): symlinked
directories are not followed out of or around the root, corrupt/oversized images and bad class names
are one `error:` line, identical images across splits are refused, and a pickle never runs."""

from __future__ import annotations

import json
import os
import subprocess

from .builders import bomb_png, fifo, image_folder, noise_png, pickle_payload, symlink, tiny_recipe
from .harness import CLI, Case, Sandbox

RUNS = ("runs",)
PER_CLASS = 20
IMAGE_DATA = "{dataset: imagefolder, path: data, image_size: 8, batch_size: 16}"
CIFAR_DATA = "{dataset: cifar10, path: data, image_size: 8, batch_size: 16, limit: 40}"


def _run_on(prepare, data: str = IMAGE_DATA):
    """Build `data/` with `prepare(sandbox, root)`, then run a 0-epoch recipe on it."""

    def setup(sandbox: Sandbox) -> list[str]:
        root = sandbox.work / "data"
        prepare(sandbox, root)
        sandbox.write("tiny.yaml", tiny_recipe(data=data))
        return ["run", "tiny.yaml"]

    return setup


def _two_classes(sandbox: Sandbox, root) -> None:
    image_folder(root, {"cat": PER_CLASS, "dog": PER_CLASS})


def _loop(sandbox: Sandbox, root) -> None:
    _two_classes(sandbox, root)
    symlink(root / "cat" / "again", "..")  # data/cat/again -> data: a cycle around the root


def _outside(sandbox: Sandbox, root) -> None:
    _two_classes(sandbox, root)
    photos = sandbox.home / "photos"
    image_folder(photos, {"private": 10}, seed=7)
    symlink(root / "dog" / "more", photos / "private")  # a directory out of the root


def _samples(expected: int):
    """metrics.json's data.samples must count only the real files (issue 11.5/11.6)."""

    def check(sandbox: Sandbox, outcome) -> list[str]:
        path = sandbox.work / "runs" / "tiny" / "metrics.json"
        if not path.is_file():
            return []  # the exit code already failed the case
        samples = json.loads(path.read_text()).get("data", {}).get("samples")
        if not isinstance(samples, dict):
            return ["metrics.json has no data.samples"]
        total = sum(samples.values())
        return [] if total == expected else [f"trained on {total} samples, the folder holds {expected} images"]

    return check


def _skipped(name: str):
    """The run used only the real images and said which file it skipped."""
    count = _samples(2 * PER_CLASS)

    def check(sandbox: Sandbox, outcome) -> list[str]:
        found = count(sandbox, outcome)
        if name not in outcome.stdout + outcome.stderr:
            found.append(f"{name} was skipped without a word")
        return found

    return check


def _corrupt(sandbox: Sandbox, root) -> None:
    _two_classes(sandbox, root)
    (root / "cat" / "corrupt.png").write_bytes(os.urandom(300))


def _truncated(sandbox: Sandbox, root) -> None:
    _two_classes(sandbox, root)
    data = noise_png(999, size=32)
    (root / "dog" / "truncated.png").write_bytes(data[: len(data) // 2])


def _bomb(sandbox: Sandbox, root) -> None:
    _two_classes(sandbox, root)
    (root / "cat" / "bomb.png").write_bytes(bomb_png())


def _fifo_image(sandbox: Sandbox, root) -> None:
    _two_classes(sandbox, root)
    fifo(root / "dog" / "blocking.png")


def _dev_zero_image(sandbox: Sandbox, root) -> None:
    _two_classes(sandbox, root)
    symlink(root / "dog" / "zero.png", "/dev/zero")


def _newline_class(sandbox: Sandbox, root) -> None:
    image_folder(root, {"cat": PER_CLASS, "dog\nlabel": PER_CLASS})


def _duplicates(sandbox: Sandbox, root) -> None:
    """train/val/test where every val and test image is a byte copy of a train image."""
    image_folder(root / "train", {"cat": PER_CLASS, "dog": PER_CLASS})
    for split in ("val", "test"):
        for name in ("cat", "dog"):
            (root / split / name).mkdir(parents=True)
            for i in range(5):
                (root / split / name / f"copy{i}.png").write_bytes((root / "train" / name / f"{i}.png").read_bytes())


def _cifar_pickles(sandbox: Sandbox, root) -> None:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch",
                 "batches.meta"):
        (folder / name).write_bytes(pickle_payload(sandbox))


def _grown_class(sandbox: Sandbox) -> list[str]:
    """Run on two classes, add a third class folder, run again: the data changed, so train reruns."""
    root = sandbox.work / "data"
    _two_classes(sandbox, root)
    sandbox.write("tiny.yaml", tiny_recipe(data=IMAGE_DATA))
    first = subprocess.run(CLI + ["run", "tiny.yaml"], cwd=sandbox.work, env=sandbox.env(), capture_output=True,
                           text=True, timeout=300)
    assert first.returncode == 0, f"first run failed: {first.stderr[-1000:]}"
    image_folder(root, {"bird": PER_CLASS}, seed=3)
    return ["run", "tiny.yaml"]


def _three_classes(sandbox: Sandbox, outcome) -> list[str]:
    path = sandbox.work / "runs" / "tiny" / "metrics.json"
    if not path.is_file():
        return []
    metrics = json.loads(path.read_text())
    classes = metrics.get("data", {}).get("classes")
    status = [s.get("status") for s in metrics.get("stages", [])]
    found = [] if classes == 3 else [f"metrics.json says {classes} classes after a third class folder was added"]
    if status and status[0] != "done":
        found.append(f"the train stage was {status[0]} after the data changed")
    return found


def _bad(id: str, prepare, *, error_has: tuple[str, ...] = (), data: str = IMAGE_DATA, **kw) -> Case:
    return Case(id, "images", _run_on(prepare, data), 2, outputs=RUNS, error_has=error_has,
                timeout_s=kw.pop("timeout_s", 120), **kw)


CASES = [
    # Issue 11.6: directory symlinks are not followed out of or around the root (40 real images).
    Case("images-symlink-loop", "images", _run_on(_loop), 0, outputs=RUNS, check=_samples(2 * PER_CLASS), timeout_s=120),
    Case("images-symlink-out-of-root", "images", _run_on(_outside), 0, outputs=RUNS, check=_samples(2 * PER_CLASS),
         timeout_s=120),
    _bad("images-duplicates-across-splits", _duplicates),
    # Issue 11.8/11.4: corrupt, truncated and oversized images, named in one line.
    _bad("images-corrupt", _corrupt, error_has=("corrupt.png",)),
    _bad("images-truncated", _truncated, error_has=("truncated.png",)),
    _bad("images-decompression-bomb", _bomb, error_has=("bomb.png",)),
    # A FIFO or /dev/zero behind an image name is never opened: skipped with a warning naming it.
    Case("images-fifo", "images", _run_on(_fifo_image), 0, outputs=RUNS, check=_skipped("blocking.png"), timeout_s=120),
    Case("images-symlink-to-dev-zero", "images", _run_on(_dev_zero_image), 0, outputs=RUNS, check=_skipped("zero.png"),
         timeout_s=120),
    # Issue 11.10: a class name with a newline would break labels.txt.
    _bad("images-class-name-newline", _newline_class),
    # torchvision's CIFAR-10 reader unpickles its batches: a payload must never run.
    _bad("images-cifar10-pickle-payload", _cifar_pickles, data=CIFAR_DATA),
    # Issue 11.5: adding a class folder must not reuse the trained stage (slow: two runs).
    Case("images-new-class-invalidates-cache", "images", _grown_class, 0, outputs=RUNS, check=_three_classes,
         timeout_s=300, slow=True),
]
