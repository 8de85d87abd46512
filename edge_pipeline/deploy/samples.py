"""The verification images of a bundle: N test-split images written as real PNG files.

A deployment is verified on image files, not on arrays, so the runner's own decoding, resizing,
channel handling, normalization and input quantization run on the device. Images that come from
files (imagefolder, CIFAR-10) are written as they were before preprocessing (larger ones scaled
down to MAX_SIDE, so the runner still resizes and crops them); array datasets (digits) are written
at the model's input size from the un-normalized test inputs (8-bit, 1 or 3 channels).
`samples/labels.json` names each file's true class, for the accuracy figure.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..artifacts import atomic_write_json

SAMPLES_DIR = "samples"
LABELS_FILE = "labels.json"
SAMPLE_COUNT = 16
MAX_SIDE = 512
SEED = 0


def write_samples(data, folder: Path, count: int = SAMPLE_COUNT) -> dict[str, Any]:
    """`count` test images (stratified by class where the labels are known) -> folder/*.png + labels.json."""
    folder.mkdir(parents=True, exist_ok=True)
    dataset = data.test
    picks = _pick(dataset, count)
    entries = []
    for n, index in enumerate(picks):
        image, label = _raw_image(data, dataset, index)
        name = f"{n:03d}.png"
        image.save(folder / name, format="PNG")
        entries.append({"file": name, "label": int(label), "class": data.class_names[int(label)]})
    record = {"split": "test", "samples": entries}
    atomic_write_json(folder / LABELS_FILE, record)
    return record


def _pick(dataset, count: int) -> list[int]:
    total = len(dataset)
    labels = _labels(dataset)
    if labels is None or total <= count:
        return list(range(min(count, total)))
    from ..data import stratified_indices

    return sorted(int(i) for i in stratified_indices(labels, count, SEED))


def _labels(dataset) -> np.ndarray | None:
    """The split's labels without decoding images, where the dataset keeps them."""
    tensors = getattr(dataset, "tensors", None)
    if tensors is not None and len(tensors) == 2:  # TensorDataset (digits)
        return np.asarray(tensors[1])
    base, indices = getattr(dataset, "base", None), getattr(dataset, "indices", None)
    targets = getattr(base, "targets", None)
    if targets is not None and indices is not None:  # image files or CIFAR-10 arrays, with the split's indices
        return np.asarray(targets)[np.asarray(indices)]
    return None


def _raw_image(data, dataset, index: int) -> tuple[Image.Image, int]:
    """The image before preprocessing when the split reads one, else the un-normalized input tensor."""
    base, indices = getattr(dataset, "base", None), getattr(dataset, "indices", None)
    if base is not None and indices is not None:
        image, label = base[int(indices[index])]
        if isinstance(image, Image.Image):
            if max(image.size) > MAX_SIDE:
                image = image.copy()
                image.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.BICUBIC)
            return image, int(label)
    x, label = dataset[index]
    return _to_pil(np.asarray(x, np.float32), data.mean, data.std), int(label)


def _to_pil(x: np.ndarray, mean: list[float], std: list[float]) -> Image.Image:
    """A normalized CHW input -> the 8-bit image it came from (pixel = round(255 * (x * std + mean)))."""
    pixels = x * np.asarray(std, np.float32)[:, None, None] + np.asarray(mean, np.float32)[:, None, None]
    array = np.clip(np.round(pixels * 255.0), 0, 255).astype(np.uint8)
    if array.shape[0] == 1:
        return Image.fromarray(array[0])  # uint8 HxW: mode L
    return Image.fromarray(np.ascontiguousarray(array.transpose(1, 2, 0)))  # HxWx3: RGB


def read_sample_labels(folder: Path) -> dict[str, int]:
    """{file name: label} from samples/labels.json ({} when absent or unreadable)."""
    from ..artifacts import read_json
    from ..errors import UserError

    path = folder / LABELS_FILE
    if not path.is_file():
        return {}
    try:
        record = read_json(path, limit=1 << 20)
    except UserError:
        return {}
    samples = record.get("samples") if isinstance(record, dict) else None
    return {s["file"]: int(s["label"]) for s in samples or [] if isinstance(s, dict) and "file" in s and "label" in s}
