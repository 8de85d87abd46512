"""`quantize`: plan int8 post-training quantization and build its calibration set.

The calibration inputs are drawn stratified by class from the train split, preprocessed exactly as
in training, and saved in the layout of the exported model's input (NHWC). The stage also records
every layer's activation range on that set: a layer whose range is dominated by a few outliers is
the usual cause of int8 accuracy loss, and the report names such layers. The `export` stage turns
the plan into quantized TFLite files.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import Stage, StageConfig, register_stage

CALIBRATION_FILE = "calibration.npy"
PLAN_FILE = "quantization.json"


class QuantizeConfig(StageConfig):
    mode: Literal["int8"] = Field("int8", description="int8: full-integer PTQ (weights and activations).")
    calibration_samples: int = Field(256, ge=8, le=100000)
    per_channel: bool = Field(True, description="Per-channel weight scales (per-tensor if false).")
    io_type: Literal["int8", "uint8", "float32"] = Field("int8", description="Input/output tensor type.")


@register_stage
class QuantizeStage(Stage):
    type = "quantize"
    Config = QuantizeConfig
    produces = "calibration"
    needs = ("model",)

    def run(self, ctx):
        import numpy as np

        from ..artifacts import atomic_write_json
        from ..compress.calibrate import activation_ranges
        from ..data import calibration_batch
        from ..pipeline import StageResult
        from ..ui import console

        cfg = self.config
        model = ctx.load_model()
        calib = calibration_batch(ctx.data, cfg.calibration_samples, ctx.seed)  # NCHW, normalized
        np.save(ctx.out_dir / CALIBRATION_FILE, calib.permute(0, 2, 3, 1).contiguous().numpy().astype(np.float32))
        ranges = activation_ranges(model.module, calib, batch_size=64)
        outliers = sorted(ranges, key=lambda r: -r["outlier_ratio"])[:5]
        plan = {
            "mode": cfg.mode, "per_channel": cfg.per_channel, "io_type": cfg.io_type,
            "calibration_samples": int(len(calib)), "layout": "NHWC", "model_stage": ctx.upstream("model").name,
        }
        atomic_write_json(ctx.out_dir / PLAN_FILE, plan)
        worst = ", ".join(f"{r['layer']} ({r['outlier_ratio']:.1f}x)" for r in outliers[:3])
        console.print(f"  quantize: {len(calib)} calibration samples; widest activation ranges: {worst}")
        return StageResult(details={"plan": plan, "activation_ranges": ranges, "outliers": outliers})
