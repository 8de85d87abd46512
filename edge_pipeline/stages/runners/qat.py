"""Running the `qat` stage (imported only when it runs; see `qat.py` for its config)."""

from __future__ import annotations

from typing import Any

from ...compress.int8sim import activation_ranges
from ...compress.prepare_int8 import equalize_in_place, replace_relu6
from ...compress.qat import QuantAware
from ...data import calibration_batch
from ...training import LossFn, cross_entropy, fit
from ...ui import console
from ..context import StageResult
from .finetune import _distill_loss

# Optimizer steps between two measurements of the input ranges on the calibration set (a forward
# pass over it: cheap next to the steps themselves).
RECALIBRATE_EVERY = 10


def run(stage, ctx):
    cfg = stage.config
    model = ctx.load_model()
    calibration = calibration_batch(ctx.data, cfg.calibration_samples, ctx.seed)
    loss: LossFn = cross_entropy(cfg.label_smoothing)
    details: dict[str, Any] = {"per_channel": cfg.per_channel, "teacher": None}
    extra = []
    distill_loss = None
    if cfg.distill:
        distill_loss, info = _distill_loss(stage, ctx, model.module)
        loss, extra = distill_loss, distill_loss.parameters()
        details.update(info)
    if cfg.relu6_to_relu:
        details["relu6_replaced"] = len(replace_relu6(model))
    if cfg.equalize:
        model.module.eval()
        details["equalize"] = equalize_in_place(model.module)
        console.print(f"  {ctx.spec.name}: equalized {len(details['equalize']['pairs'])} layer pairs before training")
    aware = QuantAware(model.module, calibration, cfg.per_channel)
    with aware.attached():
        history = fit(model.module, ctx.data, cfg, ctx.seed, loss, ctx.spec.name, extra_params=extra,
                      after_step=aware.every(RECALIBRATE_EVERY))
    if distill_loss is not None:
        distill_loss.close()
    model.module.eval()
    ranges = aware.range_report(activation_ranges(model.module, calibration))
    ratios = [r["scale_ratio"] for r in ranges if r["scale_ratio"]]
    details.update({"history": history, "layers": len(aware.layers), "input_ranges": ranges,
                    "scale_ratio_min": min(ratios, default=None), "scale_ratio_max": max(ratios, default=None)})
    if ratios:
        console.print(f"  {ctx.spec.name}: the converter's input scales / the ones trained with: {min(ratios):.3f}-{max(ratios):.3f}")
    return StageResult(model, details=details)
