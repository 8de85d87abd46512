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

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from .base import Stage, StageConfig, register_stage

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
    config: QuantizeConfig
    produces = "calibration"
    needs = ("model",)

    def check(self, index, earlier):
        folder = self.config.calibration_dir
        if folder and not Path(folder).expanduser().is_dir():
            return [(("calibration_dir",), f"folder {folder!r} does not exist (relative paths start at the working dir)")]
        return []

    def key_inputs(self, recipe, index):
        """The calibration images (names, sizes, mtimes): changing them reruns the stage."""
        if not self.config.calibration_dir:
            return {}
        from ..data.identity import folder_fingerprint

        return {"calibration_dir": folder_fingerprint(self.config.calibration_dir, "quantize.calibration_dir")}


