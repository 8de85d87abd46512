"""Listing the image files under a folder without being fooled by the folder.

A data folder is input like any other. The walk here:
- follows a symlink only when its target is inside the root, and enters every real directory at
  most once (tracked by (st_dev, st_ino)), so a symlink loop or a second path to a folder cannot
  repeat images (a loop once turned 40 noise images into 1,640 samples and 99 % test accuracy);
- skips symlinks that leave the root, broken symlinks and non-regular files (a FIFO or `/dev/zero`
  named `x.png` would hang or fill memory), each with a warning the loader prints;
- skips hidden entries (`.DS_Store`, `._x.jpg` resource forks, `.ipynb_checkpoints`);
- stops with an error after MAX_SCANNED_ENTRIES directory entries;
- refuses class folder names that cannot be a line of labels.txt (see labels.py).
It only calls stat: no image is opened here, so it is cheap enough for the cache key.
Torch-free and PIL-free.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError
from .labels import check_class_names, shown

# The extensions torchvision's ImageFolder accepts (kept so existing datasets load the same files).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
CALIBRATION_EXTENSIONS = (*IMAGE_EXTENSIONS, ".gif")  # quantize.calibration_dir always took GIFs too
# Directory entries (files and folders) one scan may visit: far above any dataset meant for this
# tool (ImageNet-1k has 1.3 M files), low enough that pointing `data.path` at `/` stops quickly.
MAX_SCANNED_ENTRIES = 2_000_000
SPLIT_NAMES = ("train", "val", "test")
SHOWN_WARNINGS = 5


@dataclass(frozen=True)
class ImageFile:
    path: Path  # the real path (symlinks resolved): what is opened
    rel: str  # the path under the scanned root, as the user sees it
    size: int
    mtime_ns: int

    @property
    def stamp(self) -> tuple[str, int, int]:
        """Identity without reading the bytes: for the cache key and the hash cache."""
        return (str(self.path), self.size, self.mtime_ns)


@dataclass
class ImageTree:
    """One folder of class folders: `<path>/<class>/**/<image>`."""

    path: Path
    classes: list[str]
    samples: list[tuple[ImageFile, int]]

    @property
    def targets(self) -> list[int]:
        return [label for _, label in self.samples]


@dataclass
class FolderScan:
    """An ImageFolder dataset on disk: one tree ("all") or one per split folder (train/val/test)."""

    root: Path
    trees: dict[str, ImageTree]
    warnings: list[str] = field(default_factory=list)

    @property
    def split_layout(self) -> bool:
        return "all" not in self.trees


class Walker:
    """A safe recursive walk under one root; warnings collect what was skipped and why."""

    def __init__(self, root: Path, what: str, extensions: tuple[str, ...] = IMAGE_EXTENSIONS) -> None:
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise UserError(f"{what}: {shown(self.root)} is not a folder; give the folder that holds the images")
        self.real_root = os.path.realpath(self.root)
        self.what = what
        self.extensions = extensions
        self.visited: set[tuple[int, int]] = set()
        self.entries = 0
        self.warnings: list[str] = []

    def subfolders(self, folder: str, rel: str) -> list[tuple[str, str]]:
        """(name, real path) of the folders directly in `folder` that the rules let us enter."""
        found = []
        for entry, real, st in self._entries(folder, rel):
            if stat.S_ISDIR(st.st_mode) and self._first_visit(real, st, f"{rel}{entry.name}"):
                found.append((entry.name, real))
        return found

    def files(self, folder: str, rel: str) -> Iterator[ImageFile]:
        """Every image file under `folder`: depth first, sorted by name at each level, a folder's
        files before its subfolders. A stack, not recursion: a 10,000-deep tree is not an error."""
        pending = [(folder, rel)]
        while pending:
            folder, rel = pending.pop()
            subfolders = []
            for entry, real, st in self._entries(folder, rel):
                name = f"{rel}{entry.name}"
                if stat.S_ISDIR(st.st_mode):
                    if self._first_visit(real, st, name):
                        subfolders.append((real, f"{name}/"))
                elif not entry.name.lower().endswith(self.extensions):
                    continue
                elif stat.S_ISREG(st.st_mode):
                    yield ImageFile(Path(real), name, st.st_size, st.st_mtime_ns)
                else:
                    self.warnings.append(f"{self.what}: {shown(name)} is not a regular file; skipped")
            pending.extend(reversed(subfolders))

    def enter_root(self) -> str:
        st = os.stat(self.real_root)
        self.visited.add((st.st_dev, st.st_ino))
        return self.real_root

    def _entries(self, folder: str, rel: str) -> Iterator[tuple[os.DirEntry, str, os.stat_result]]:
        """(entry, real path, stat of the target) for the visible entries the symlink rules allow."""
        try:
            with os.scandir(folder) as listing:
                entries = sorted(listing, key=lambda e: e.name)
        except OSError as exc:
            raise UserError(f"{self.what}: cannot list {shown(self.root / rel)}: {exc.strerror}; check the permissions") from None
        for entry in entries:
            self._count()
            if entry.name.startswith("."):
                continue
            real = os.path.join(folder, entry.name)
            if entry.is_symlink():
                real = os.path.realpath(real)
                if not self._inside_root(real):
                    self.warnings.append(
                        f"{self.what}: {shown(rel + entry.name)} is a symlink to {shown(real)}, outside {shown(self.root)}; skipped")
                    continue
            try:
                st = os.stat(real)
            except OSError:
                self.warnings.append(f"{self.what}: {shown(rel + entry.name)} is a broken symlink; skipped")
                continue
            yield entry, real, st

    def _first_visit(self, real: str, st: os.stat_result, name: str) -> bool:
        key = (st.st_dev, st.st_ino)
        if key in self.visited:
            self.warnings.append(
                f"{self.what}: {shown(name)} leads to a folder already read ({shown(real)}): a symlink loop or a second path; skipped")
            return False
        self.visited.add(key)
        return True

    def _inside_root(self, real: str) -> bool:
        return os.path.commonpath([self.real_root, real]) == self.real_root

    def _count(self) -> None:
        self.entries += 1
        if self.entries > MAX_SCANNED_ENTRIES:
            raise UserError(
                f"{self.what}: more than {MAX_SCANNED_ENTRIES:,} files and folders under {shown(self.root)}; "
                "point it at the dataset folder itself (or a smaller copy of it)"
            )


def scan_image_folder(root: str | os.PathLike, what: str = "data.path") -> FolderScan:
    """`root/<class>/<image>`, or `root/train|val|test/<class>/<image>` (train plus val and/or test)."""
    walker = Walker(Path(root), what)
    _refuse_shared_split_folders(walker.root, what)
    top = walker.subfolders(walker.enter_root(), "")
    splits = {name: real for name, real in top if name in SPLIT_NAMES}
    if splits and "train" not in splits:
        raise UserError(
            f"{what}: {shown(walker.root)} has {'/'.join(sorted(splits))} but no train folder; add {shown(walker.root / 'train')}/<class>/ "
            "or put the class folders directly in it")
    if "train" in splits and len(splits) > 1:
        trees = {s: _tree(walker, splits[s], f"{s}/", walker.root / s) for s in SPLIT_NAMES if s in splits}
    else:
        trees = {"all": _tree(walker, walker.real_root, "", walker.root, top)}
    return FolderScan(walker.root, trees, walker.warnings)


def scan_images(folder: str | os.PathLike, what: str, extensions: tuple[str, ...] = IMAGE_EXTENSIONS) -> tuple[list[ImageFile], list[str]]:
    """Every image file under `folder` (recursively) with the same rules, and the warnings."""
    walker = Walker(Path(folder), what, extensions)
    files = list(walker.files(walker.enter_root(), ""))
    return files, walker.warnings


def _refuse_shared_split_folders(root: Path, what: str) -> None:
    """`test -> train` (a symlink) would make the test split the training images: say so plainly."""
    present = [s for s in SPLIT_NAMES if (root / s).is_dir()]
    for i, a in enumerate(present):
        for b in present[i + 1:]:
            if os.path.samefile(root / a, root / b):
                raise UserError(
                    f"{what}: {shown(root / a)} and {shown(root / b)} are the same folder (a symlink); "
                    "held-out images must be other files than the training images")


def _tree(walker: Walker, real: str, rel: str, display: Path, subfolders: list[tuple[str, str]] | None = None) -> ImageTree:
    classes = walker.subfolders(real, rel) if subfolders is None else subfolders
    names = [name for name, _ in classes]
    check_class_names(names, f"{walker.what}: {shown(display)}")
    samples: list[tuple[ImageFile, int]] = []
    for label, (name, class_real) in enumerate(classes):
        files = list(walker.files(class_real, f"{rel}{name}/"))
        if not files:
            raise UserError(
                f"{walker.what}: class folder {shown(display / name)} has no images ({', '.join(walker.extensions)}); "
                "add images or remove the folder")
        samples += [(f, label) for f in files]
    return ImageTree(display, names, samples)


def print_warnings(warnings: list[str]) -> None:
    """The first few warnings of a scan on the console (a thousand skipped symlinks are one line)."""
    from rich.markup import escape  # file names may contain [brackets]

    from ..ui import console

    for line in warnings[:SHOWN_WARNINGS]:
        console.print(f"[yellow]![/] {escape(line)}")
    if len(warnings) > SHOWN_WARNINGS:
        console.print(f"[yellow]![/] ... and {len(warnings) - SHOWN_WARNINGS} more like these")
