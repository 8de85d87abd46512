"""`profile`: latency and memory of the exported TFLite models on each device of the recipe.

Unless `baseline: false`, it also measures the trained baseline (the recipe's first model stage)
converted to the same precisions, on the same devices with the same settings, so the report can
say what the recipe bought on each device; the conversion runs once per run (the `baseline/`
folder, reused by every profile stage while the baseline model and the quantize plan are unchanged).
For each device it names the file to ship: the fastest profiled precision that passes the
accuracy gates (float32 is the reference: no gate applies to it) and fits the device's `memory_mb`.
"""

from __future__ import annotations

from pydantic import Field

from ..profiling.devices import get_device
from .base import Stage, StageConfig, register_stage, unknown_devices
from .export import Precision


class ProfileConfig(StageConfig):
    devices: list[str] = Field(default_factory=lambda: ["host"], min_length=1, description="Device names (devices/*.yaml).")
    precisions: list[Precision] | None = Field(None, min_length=1, description="Default: every exported precision.")
    threads: int | None = Field(None, ge=1, le=256, description="Override each device's thread count.")
    outputs_check: int = Field(
        8, ge=0, le=256,
        description="Test samples run on each device and compared with this host's outputs (0: skip).",
    )
    baseline: bool = Field(
        True,
        description="Also profile the trained baseline (first model stage) in the same precisions and float32, "
        "for the speed-up and size ratios of each shipped file.",
    )


@register_stage
class ProfileStage(Stage):
    type = "profile"
    Config = ProfileConfig
    config: ProfileConfig
    produces = "profiles"
    needs = ("tflite",)
    measures_time = True

    def check(self, index, earlier):
        return unknown_devices(self.config.devices, "devices")

    def key_inputs(self, recipe, index):
        """The device profiles as resolved now: editing a device file (threads, budget, host)
        re-measures on it instead of reusing profiles measured under the old settings."""

        return {"devices": {name: get_device(name).model_dump(mode="json") for name in self.config.devices}}

