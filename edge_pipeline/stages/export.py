"""`export`: torch -> ONNX (checked) -> onnx2tf -> TFLite in every precision, measured and gated.

Files: float32 always (the reference), plus every precision in the quantize stage's `mode`. Each
file is inspected, evaluated on the test split (accuracy, top-1 agreement and logit cosine with
the torch model, max relative error), compared layer by layer with the float32 file (diagnosis),
checked against the quantize stage's gates and against the runtime of every device it will be
deployed to. A failed check stops the run here (exit 1) with the reason and the fix; every stage
before this one stays cached.

Bundle: model.tflite (the first reduced precision, or float32), model_<precision>.tflite,
model.onnx, labels.txt, metadata.json (input shape, layout, normalization, dtypes, quantization,
class names, recipe hash).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from ..profiling.devices import get_device
from .base import Stage, StageConfig, register_stage, unknown_devices

Precision = Literal["float32", "float16", "dynamic_int8", "int8", "int16x8"]
BUNDLE_MODEL = "model.tflite"


class ExportConfig(StageConfig):
    format: Literal["tflite"] = "tflite"
    opset: int = Field(17, ge=13, le=21)
    onnx_tolerance: float = Field(1e-4, gt=0, description="Max relative error onnxruntime vs torch.")
    float_tolerance: float = Field(1e-4, gt=0, description="Max relative error float32 TFLite vs torch.")
    timeout_s: int = Field(3600, ge=10, description="Stop a conversion that takes longer.")
    target_devices: list[str] | None = Field(
        None, description="Devices whose runtime must load the files (default: the devices of the profile stages after this one).")


@register_stage
class ExportStage(Stage):
    type = "export"
    Config = ExportConfig
    config: ExportConfig
    produces = "tflite"
    needs = ("model",)

    def check(self, index, earlier):
        return unknown_devices(self.config.target_devices or [], "target_devices")

    def key_inputs(self, recipe, index):
        """The target devices' runtimes and op rules: the compatibility check depends on them."""
        return {"targets": [{"device": device.name, "precisions": precisions,
                             **device.model_dump(mode="json", include={"runtime", "allow_flex", "allowed_ops"})}
                            for device, precisions in self._targets(recipe, index)]}

    def _targets(self, recipe, index) -> list[tuple[Any, list[str] | None]]:
        """(DeviceProfile, precisions to deploy or None for all) from target_devices, or from the
        profile stages that profile this export."""
        if self.config.target_devices:
            return [(get_device(d), None) for d in self.config.target_devices]
        targets = []
        for spec in recipe.stages[index + 1:]:
            if spec.type == "export":
                break
            if spec.type == "profile":
                targets += [(get_device(d), spec.config.precisions) for d in spec.config.devices]
        return targets


