"""Opening one image file from the user's disk, safely: every failure is one UserError naming the file.

Before decoding: the file must be a regular file (not a FIFO or `/dev/zero` behind a name), not
empty and at most MAX_IMAGE_BYTES. After reading the header: at most MAX_IMAGE_PIXELS pixels, so a
small file that claims 100,000 x 100,000 pixels (a decompression bomb) is refused before it is
decoded; Pillow's own DecompressionBombWarning/Error are turned into the same error. Truncated and
corrupt files fail at decode time and name the file too.
Torch-free.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import warnings
from pathlib import Path

from PIL import Image

from ..errors import UserError
from .labels import shown

# 120 M pixels: above a 108 MP phone photo, 360 MB as decoded RGB. Bombs claim billions.
MAX_IMAGE_PIXELS = 120_000_000
MAX_IMAGE_BYTES = 256 * 1024 * 1024
# Pillow warns above its limit and raises above twice it; ours is checked explicitly as well.
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS


def read_image_bytes(path: str | os.PathLike, what: str) -> bytes:
    """The bytes of an image file, after checking it is a regular file of a sane size."""
    path = Path(path)
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; fstat below refuses it anyway.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise UserError(f"{what}: {shown(path)}: cannot open ({exc.strerror}); check the file exists and is readable") from None
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UserError(f"{what}: {shown(path)} is not a regular file; remove it from the image folder")
        if st.st_size == 0:
            raise UserError(f"{what}: {shown(path)} is empty (0 bytes); remove it or replace it with the real image")
        if st.st_size > MAX_IMAGE_BYTES:
            raise UserError(
                f"{what}: {shown(path)} is {st.st_size / 2**20:.0f} MiB, above the {MAX_IMAGE_BYTES // 2**20} MiB limit "
                "for one image; downscale it or remove it")
        return fh.read(MAX_IMAGE_BYTES + 1)


def decode_image(data: bytes, path: str | os.PathLike, what: str, fast: bool = False) -> Image.Image:
    """Decode image bytes into an RGB PIL image (checked). `fast` decodes JPEGs at 1/8 scale: enough
    to prove the whole file decodes, several times cheaper (for checking a dataset up front)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
            _check_pixels(image, path, what)
            if fast and image.format == "JPEG":
                image.draft("RGB", (max(1, image.width // 8), max(1, image.height // 8)))
            image.load()
            return image.convert("RGB")
        except UserError:
            raise
        except (Image.DecompressionBombWarning, Image.DecompressionBombError):
            raise UserError(_too_many_pixels(path, what, None)) from None
        except Exception as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise UserError(
                f"{what}: {shown(path)} is not a readable image ({reason}); it is corrupt or truncated: "
                "replace it or remove it") from None


def open_image(path: str | os.PathLike, what: str) -> Image.Image:
    """An RGB PIL image from a file on disk, or one UserError naming the file."""
    return decode_image(read_image_bytes(path, what), path, what)


def check_image_file(path: str | os.PathLike, what: str) -> str:
    """Read, fully decode (JPEGs at reduced scale) and hash an image file; returns the sha256 of its bytes."""
    data = read_image_bytes(path, what)
    decode_image(data, path, what, fast=True)
    return hashlib.sha256(data).hexdigest()


def _check_pixels(image: Image.Image, path: str | os.PathLike, what: str) -> None:
    width, height = image.size
    if width <= 0 or height <= 0:
        raise UserError(f"{what}: {shown(path)} claims a size of {width}x{height}; it is corrupt: replace it or remove it")
    if width * height > MAX_IMAGE_PIXELS:
        raise UserError(_too_many_pixels(path, what, (width, height)))


def _too_many_pixels(path: str | os.PathLike, what: str, size: tuple[int, int] | None) -> str:
    claimed = f"{size[0]}x{size[1]} pixels" if size else "more pixels than the limit"
    return (f"{what}: {shown(path)} is {claimed}, above the limit of {MAX_IMAGE_PIXELS:,} "
            "(a decompression bomb or a huge image); downscale it or remove it")
