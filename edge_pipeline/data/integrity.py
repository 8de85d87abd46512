"""Checks on an image dataset before anything trains on it: every file decodes, and no image is in
two splits.

Every image is read once, fully decoded (JPEGs at 1/8 scale) and hashed, so a corrupt, truncated
or bomb image stops the run before training with one error naming the file, instead of a
traceback in the middle of an epoch. Results are cached in-process by (real path, size, mtime_ns).

Leaked splits: a held-out (val or test) image whose bytes equal an image in another split makes
the accuracy measured on it meaningless. Policy (LEAK_MAX_FILES, LEAK_MAX_SHARE): up to 5 such
files and at most 1 % of the held-out images get a warning (real datasets carry a few accidental
copies); more is an error that names examples and the fix.
Torch-free.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from ..errors import UserError
from .images import check_image_file
from .labels import shown
from .scan import ImageFile

LEAK_MAX_FILES = 5
LEAK_MAX_SHARE = 0.01
HELD_OUT = ("val", "test")

# (real path, size, mtime_ns) -> sha256 of the bytes, for files that decoded cleanly.
_checked: dict[tuple[str, int, int], str] = {}


@dataclass(frozen=True)
class Leak:
    """A held-out file byte-identical to a file in another split."""

    split: str
    rel: str
    other_split: str
    other_rel: str

    def describe(self) -> str:
        return f"{shown(self.rel)} ({self.split}) = {shown(self.other_rel)} ({self.other_split})"


def check_images(files: Iterable[ImageFile], what: str, progress=None) -> dict[ImageFile, str]:
    """sha256 of every file, after proving it decodes; raises UserError naming the first bad file."""
    digests = {}
    for f in files:
        digest = _checked.get(f.stamp)
        if digest is None:
            digest = check_image_file(f.path, what)
            _checked[f.stamp] = digest
        digests[f] = digest
        if progress is not None:
            progress.advance()
    return digests


def find_leaks(splits: Mapping[str, Sequence[ImageFile]], digests: dict[ImageFile, str]) -> list[Leak]:
    """Every held-out file whose bytes also appear in a different split."""
    where: dict[str, list[tuple[str, ImageFile]]] = defaultdict(list)
    for split, files in splits.items():
        for f in files:
            where[digests[f]].append((split, f))
    leaks = []
    for split in HELD_OUT:
        for f in splits.get(split, ()):
            other = next(((s, g) for s, g in where[digests[f]] if s != split), None)
            if other is not None:
                leaks.append(Leak(split, f.rel, other[0], other[1].rel))
    return leaks


def leak_verdict(leaks: list[Leak], held_out: int, what: str) -> str | None:
    """None when there is no leak, a warning line when within the policy; raises above it."""
    if not leaks:
        return None
    examples = "; ".join(leak.describe() for leak in leaks[:3])
    share = len(leaks) / max(1, held_out)
    if len(leaks) > LEAK_MAX_FILES or share > LEAK_MAX_SHARE:
        raise UserError(
            f"{what}: {len(leaks)} of {held_out} held-out images ({share:.1%}) are byte-identical to images in "
            f"another split, e.g. {examples}; remove the copies (keep one per image) so that val/test accuracy "
            f"measures unseen images (at most {LEAK_MAX_FILES} and {LEAK_MAX_SHARE:.0%} are tolerated)")
    return (f"{what}: {len(leaks)} held-out image(s) are byte-identical to images in another split ({examples}); "
            "their accuracy is not measured on unseen data")
