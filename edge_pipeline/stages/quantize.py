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

Gates. Every reduced file is checked against the float model on the test split: its accuracy may
drop at most `max_accuracy_drop` and its top-1 must agree with float on at least `min_agreement` of
the images. Unless the recipe sets them, per-precision defaults apply (`DEFAULT_GATES`): limits a
sound file clears with room to spare (float16 agrees with float on ~100% of images, int8 of a
trained model on 98-100%) and a broken one (an int8 file at chance, agreeing on 3-10%) fails by far.
A default limit never asks for more than two test images can resolve (small test splits). A number
sets the limit for every precision; `null` turns that gate off. When the float model itself scores
at chance (untrained), the gates do not apply: the export says so instead of "pass".
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from ..schema import Strict
from .base import Stage, StageConfig, register_stage

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")

QuantMode = Literal["float16", "dynamic_int8", "int8", "int16x8"]

GATES = ("max_accuracy_drop", "min_agreement")
# The gates that apply when the recipe does not set them, per reduced precision.
DEFAULT_GATES: dict[str, dict[str, float]] = {
    "float16": {"max_accuracy_drop": 0.01, "min_agreement": 0.98},
    "dynamic_int8": {"max_accuracy_drop": 0.02, "min_agreement": 0.95},
    "int16x8": {"max_accuracy_drop": 0.02, "min_agreement": 0.95},
    "int8": {"max_accuracy_drop": 0.03, "min_agreement": 0.90},
}


def _gate_limit(value: Any) -> Any:
    """A gate is a fraction in [0, 1], `default` (the precision's default) or null (off): one clear error."""
    if value is None or value == "default":
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"must be a number from 0 to 1, `default` or null (no gate), got {value!r}")
    if value < 0:
        raise ValueError(f"must be >= 0, got {value!r}")
    if value > 1:
        raise ValueError(f"must be <= 1, got {value!r}")
    return float(value)


GateLimit = Annotated[float | Literal["default"] | None, BeforeValidator(_gate_limit)]


def _defaults_text(gate: str) -> str:
    return ", ".join(f"{precision} {limits[gate]:g}" for precision, limits in DEFAULT_GATES.items())


class AdaRoundConfig(Strict):
    """Learned rounding of the int8 weights (see compress/adaround.py)."""

    iterations: int = Field(500, ge=10, le=100000, description="Optimizer steps per layer.")
    regularization: float = Field(0.01, gt=0, le=10, description="Weight of the term that pushes each rounding to up or down.")
    batch_size: int = Field(32, ge=1, le=4096, description="Calibration inputs per step.")


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
    max_accuracy_drop: GateLimit = Field(
        "default",
        description="Gate: fail if a reduced model's test accuracy is more than this below the float model's (0.01 = 1 point). "
        f"`default`: {_defaults_text('max_accuracy_drop')}; null: no accuracy gate.")
    min_agreement: GateLimit = Field(
        "default",
        description="Gate: fail if a reduced model agrees with the float model's top-1 on less than this fraction. "
        f"`default`: {_defaults_text('min_agreement')}; null: no agreement gate.")
    diagnose_samples: int = Field(32, ge=1, le=4096, description="Test inputs for the per-layer diagnosis.")
    # The preparation methods are left out of the config dump (cache key) at their defaults, so adding
    # them did not invalidate every cached quantize stage.
    equalize: bool = Field(
        False, exclude_if=lambda value: not value,
        description="Cross-layer equalization (data-free quantization): rescale consecutive conv/Linear pairs "
        "(through BatchNorm and ReLU/LeakyReLU/PReLU) so their channel ranges match, then absorb high BatchNorm "
        "biases into the next layer. Function-preserving; helps most with per-tensor int8 and depthwise layers.")
    relu6_to_relu: bool = Field(
        False, exclude_if=lambda value: not value,
        description="With equalize: replace ReLU6 by ReLU first (ReLU6 is not scale-equivariant, so pairs through it "
        "cannot be equalized). Changes the float model: its accuracy before and after is reported.")
    adaround: AdaRoundConfig | None = Field(
        None, exclude_if=lambda value: value is None,
        description="Learn each weight's rounding (up or down) to reproduce every layer's float output on the calibration "
        "set (AdaRound); the weights are left on the converter's int8 grid. `adaround: {}` for the defaults.")
    bias_correction: Literal["none", "empirical", "analytic"] = Field(
        "none", exclude_if=lambda value: value == "none",
        description="Add to each layer's bias the mean output shift int8 weight rounding causes: empirical measures it "
        "on the calibration set; analytic (data-free) derives it from the preceding BatchNorm's statistics, for the layers "
        "that follow one.")

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

    @model_validator(mode="after")
    def _relu6_needs_equalize(self):
        if self.relu6_to_relu and not self.equalize:
            raise ValueError("relu6_to_relu prepares equalization: set equalize: true too")
        return self

    @property
    def prepares_model(self) -> bool:
        """Does the stage change the model before conversion (and save the changed one)?"""
        return self.equalize or self.adaround is not None or self.bias_correction != "none"

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
        for name, stage in earlier:
            if stage.type == "qat" and stage.config.per_channel != self.config.per_channel:
                return [(("per_channel",), f"qat stage {name!r} trained with per_channel: {str(stage.config.per_channel).lower()}; "
                         "use the same here, or the int8 file will not round like QAT did")]
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


