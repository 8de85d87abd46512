"""Calibration inputs from a folder of the user's images (`quantize.calibration_dir`).

The folder is listed with the same rules as a dataset (scan.py: no symlinks out of it, no loops, a
cap on the file count) and every image is opened with the checks of images.py, so a corrupt or
bomb image is one error naming the file.
"""

from __future__ import annotations

import numpy as np
import torch
from torchvision import transforms as T

from ..errors import UserError
from .bundle import DataBundle
from .folders import _to_tensor
from .images import open_image
from .scan import CALIBRATION_EXTENSIONS, print_warnings, scan_images

WHAT = "quantize.calibration_dir"


def folder_calibration(folder: str, data: DataBundle, n: int, seed: int) -> tuple[torch.Tensor, dict]:
    """Up to n images from `folder` (recursively), preprocessed like the recipe's training inputs:
    resized and center-cropped to the image size, to 1 or 3 channels, normalized with the data's
    mean/std. Returns (NCHW tensor, facts for the plan)."""
    files, warnings = scan_images(folder, WHAT, CALIBRATION_EXTENSIONS)
    print_warnings(warnings)
    if not files:
        raise UserError(f"{WHAT}: no images ({', '.join(CALIBRATION_EXTENSIONS)}) under {folder}; "
                        "put calibration images there or remove calibration_dir")
    if len(files) > n:
        pick = np.random.default_rng(seed).choice(len(files), size=n, replace=False)
        files = [files[i] for i in sorted(pick)]
    transform = T.Compose([_to_tensor(data.image_size, data.in_channels), T.Normalize(data.mean, data.std)])
    tensors = [transform(open_image(f.path, WHAT)) for f in files]
    return torch.stack(tensors), {"source": f"folder {folder}", "files": len(files)}
