"""Builders of hostile inputs shared by the case modules: recipes, pickles, images, TFLite edits."""

from __future__ import annotations

import io
import os
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np

from .harness import Sandbox

# A valid recipe that only validates (the recipe cases break one thing in it at a time).
VALID_RECIPE = """\
name: hostile
seed: 0
data: {dataset: digits, image_size: 16}
model: {arch: vgg_small}
stages:
  - train: {epochs: 1}
"""

# The smallest real run: 16 px digits, a half-width VGG, no training (a few seconds with torch).
TINY_DATA = "{dataset: digits, image_size: 16, batch_size: 64, limit: 200}"
TINY_MODEL = "{arch: vgg_small, width: 0.5}"


def tiny_recipe(stages: str = "  - train: {epochs: 0}\n", *, name: str = "tiny", data: str = TINY_DATA,
                model: str = TINY_MODEL) -> str:
    return f"name: {name}\nseed: 0\ndata: {data}\nmodel: {model}\nstages:\n{stages}"


FAST_DEVICE = """\
name: fast
description: this machine with a short budget
transport: {kind: local}
runtime: {name: ai-edge-litert}
threads: 1
budget: {warmup_runs: 1, min_runs: 3, min_seconds: 0.0, max_seconds: 5.0, max_rel_std: 100.0}
"""


def alias_bomb(levels: int = 9, width: int = 9, indent: str = "") -> str:
    """`billion laughs`: each level a list of `width` aliases to the previous one (width**levels leaves)."""
    lines = [f'{indent}l0: &l0 [{", ".join(["lol"] * width)}]']
    for level in range(1, levels):
        refs = ", ".join([f"*l{level - 1}"] * width)
        lines.append(f"{indent}l{level}: &l{level} [{refs}]")
    return "\n".join(lines) + "\n"


def merge_bomb(levels: int = 9, width: int = 9, indent: str = "") -> str:
    """The same with merge keys: each mapping merges the previous one `width` times."""
    lines = [f"{indent}m0: &m0 {{a: 1, b: 2, c: 3}}"]
    for level in range(1, levels):
        refs = ", ".join([f"*m{level - 1}"] * width)
        lines.append(f"{indent}m{level}: &m{level} {{<<: [{refs}]}}")
    return "\n".join(lines) + "\n"


class Payload:
    """Unpickling this runs `command` (what a malicious checkpoint or dataset batch does)."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def pickle_payload(sandbox: Sandbox) -> bytes:
    return pickle.dumps({"data": Payload(sandbox.inject), "labels": [0]}, protocol=2)


def torch_payload(sandbox: Sandbox) -> bytes:
    import torch

    buffer = io.BytesIO()
    torch.save({"features.0.weight": Payload(sandbox.inject)}, buffer)
    return buffer.getvalue()


def torch_bytes(obj) -> bytes:
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def safetensors_bytes(tensors: dict) -> bytes:
    from safetensors.torch import save

    return save({k: v.contiguous() for k, v in tensors.items()})


def noise_png(seed: int, size: int = 8) -> bytes:
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def image_folder(root: Path, classes: dict[str, int], seed: int = 0) -> Path:
    """`root/<class>/<i>.png`, 8x8 noise, distinct bytes per image."""
    for c, (name, count) in enumerate(classes.items()):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            (folder / f"{i}.png").write_bytes(noise_png(seed * 100_000 + c * 1000 + i))
    return root


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def bomb_png(side: int = 20_000) -> bytes:
    """A valid 1-bit PNG of side x side pixels (400 M pixels at 20,000) that compresses to ~50 KB."""
    row = b"\0" + b"\0" * ((side + 7) // 8)  # filter byte + packed bits
    compressor = zlib.compressobj(9)
    chunks = [compressor.compress(row * 1000) for _ in range(side // 1000)]
    chunks.append(compressor.compress(row * (side % 1000)))
    chunks.append(compressor.flush())
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # bit depth 1, grayscale
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", b"".join(chunks))
            + _png_chunk(b"IEND", b""))


def npy_header_only(shape: tuple[int, ...], dtype: str = "<f4") -> bytes:
    """A .npy whose header claims `shape` but which holds no data (an unbounded-allocation bait)."""
    header = repr({"descr": dtype, "fortran_order": False, "shape": shape}).encode()
    total = 10 + len(header) + 1
    header += b" " * ((64 - total % 64) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header


def edit_tflite(source: Path, edit) -> bytes:
    """The .tflite at `source` with `edit(model)` applied to its flatbuffer object tree."""
    from edge_pipeline.convert.flatbuffer import read_model, write_model

    model = read_model(source)
    edit(model)
    return write_model(model)


def fifo(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)
    return path


def symlink(path: Path, target: str | Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target, path)
    return path
