"""`quantize`: how the model is reduced in precision, calibrated and gated.

Where precisions are stated: `quantize.mode` lists the reduced precisions (float16, dynamic_int8,
int8, int16x8); `export` always writes float32 (the reference every other file is checked
against) plus each of them. So a recipe says *what* to quantize in one place, and *how* next to it.

The calibration inputs are drawn stratified by class from the train split, or from a folder of
the user's images (`calibration_dir`), preprocessed exactly as in training, and saved in the layout
of the exported model's input (NHWC). The stage also records every layer's activation range on that
set: a layer whose range is dominated by a few outliers is the usual cause of int8 accuracy loss.
The `export` stage turns the plan into TFLite files, measures them, applies the gates and keeps
layers in float on request.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from .base import Stage, StageConfig, register_stage

CALIBRATION_FILE = "calibration.npy"
PLAN_FILE = "quantization.json"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")

QuantMode = Literal["float16", "dynamic_int8", "int8", "int16x8"]


class QuantizeConfig(StageConfig):
    mode: QuantMode | list[QuantMode] = Field(
        "int8",
        description="Reduced precision(s) exported next to float32: float16 (weights), dynamic_int8 (dynamic-range), "
        "int8 (full integer), int16x8 (int16 activations, int8 weights); one value or a list.",
    )
    calibration_samples: int = Field(256, ge=8, le=100000)
    calibration_dir: str | None = Field(
        None, description="A folder of images (searched recursively) to calibrate on instead of the train split.")
    per_channel: bool = Field(True, description="Per-channel weight scales (per-tensor if false).")
    io_type: Literal["int8", "uint8", "float32"] = Field(
        "int8", description="Input/output type of the int8 model (int16x8 uses int16 unless float32).")
    keep_float: list[str] = Field(
        default_factory=list,
        description="Layer globs kept in float in the int8 model (names as `edge-pipeline diagnose` prints them).")
    auto_keep_float: int = Field(0, ge=0, le=1000, description="Also keep the N layers with the largest int8 error in float.")
    max_accuracy_drop: float | None = Field(
        None, ge=0, le=1,
        description="Gate: fail if a reduced model's test accuracy is more than this below the float model's (0.01 = 1 point).")
    min_agreement: float | None = Field(
        None, ge=0, le=1, description="Gate: fail if a reduced model agrees with the float model's top-1 on less than this fraction.")
    diagnose_samples: int = Field(32, ge=1, le=4096, description="Test inputs for the per-layer diagnosis.")

    @field_validator("mode")
    @classmethod
    def _unique(cls, value):
        if isinstance(value, list):
            if not value:
                raise ValueError("give at least one precision")
            return list(dict.fromkeys(value))
        return value

    @model_validator(mode="after")
    def _keep_float_needs_int8(self):
        if (self.keep_float or self.auto_keep_float) and "int8" not in self.modes:
            raise ValueError("keep_float/auto_keep_float apply to the int8 model: add int8 to `mode`")
        return self

    @property
    def modes(self) -> list[str]:
        return list(self.mode) if isinstance(self.mode, list) else [self.mode]


@register_stage
class QuantizeStage(Stage):
    type = "quantize"
    Config = QuantizeConfig
    produces = "calibration"
    needs = ("model",)

    def check(self, index, earlier):
        from pathlib import Path

        folder = self.config.calibration_dir
        if folder and not Path(folder).expanduser().is_dir():
            return [(("calibration_dir",), f"folder {folder!r} does not exist (relative paths start at the working dir)")]
        return []

    def run(self, ctx):
        import numpy as np

        from ..artifacts import atomic_write_json
        from ..compress.calibrate import activation_ranges
        from ..data import calibration_batch
        from ..pipeline import StageResult
        from ..ui import console

        cfg = self.config
        model = ctx.load_model()
        if cfg.calibration_dir:
            calib, source = folder_calibration(cfg.calibration_dir, ctx.data, cfg.calibration_samples, ctx.seed)
        else:
            calib = calibration_batch(ctx.data, cfg.calibration_samples, ctx.seed)  # NCHW, normalized
            source = {"source": "train split (stratified by class)"}
        np.save(ctx.out_dir / CALIBRATION_FILE, calib.permute(0, 2, 3, 1).contiguous().numpy().astype(np.float32))
        ranges = activation_ranges(model.module, calib, batch_size=64)
        outliers = sorted(ranges, key=lambda r: -r["outlier_ratio"])[:5]
        plan = {
            "modes": cfg.modes, "per_channel": cfg.per_channel, "io_type": cfg.io_type,
            "keep_float": cfg.keep_float, "auto_keep_float": cfg.auto_keep_float,
            "gates": {"max_accuracy_drop": cfg.max_accuracy_drop, "min_agreement": cfg.min_agreement},
            "diagnose_samples": cfg.diagnose_samples,
            "calibration": {**source, "samples": int(len(calib))}, "layout": "NHWC",
            "model_stage": ctx.upstream("model").name,
        }
        atomic_write_json(ctx.out_dir / PLAN_FILE, plan)
        worst = ", ".join(f"{r['layer']} ({r['outlier_ratio']:.1f}x)" for r in outliers[:3])
        console.print(f"  quantize: {len(calib)} calibration samples ({source['source']}); widest activation ranges: {worst}")
        return StageResult(details={"plan": plan, "activation_ranges": ranges, "outliers": outliers})


def folder_calibration(folder: str, data, n: int, seed: int):
    """Up to n images from `folder` (recursively), preprocessed like the recipe's training inputs:
    resized and center-cropped to the image size, to 1 or 3 channels, normalized with the data's
    mean/std. Returns (NCHW tensor, facts for the plan)."""
    from pathlib import Path

    import numpy as np
    import torch
    from PIL import Image, UnidentifiedImageError
    from torchvision import transforms as T

    from ..data.folders import _to_tensor
    from ..errors import UserError

    root = Path(folder).expanduser()
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise UserError(f"quantize.calibration_dir: no images ({', '.join(IMAGE_SUFFIXES)}) under {root}")
    if len(files) > n:
        pick = np.random.default_rng(seed).choice(len(files), size=n, replace=False)
        files = [files[i] for i in sorted(pick)]
    transform = T.Compose([_to_tensor(data.image_size, data.in_channels), T.Normalize(data.mean, data.std)])
    tensors = []
    for path in files:
        try:
            with Image.open(path) as image:
                tensors.append(transform(image))
        except (UnidentifiedImageError, OSError) as exc:
            raise UserError(f"quantize.calibration_dir: {path} is not a readable image ({exc})") from None
    return torch.stack(tensors), {"source": f"folder {root}", "files": len(files)}
