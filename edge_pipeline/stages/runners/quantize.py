"""Running the `quantize` stage (imported only when it runs; see `quantize.py` for its config)."""

from __future__ import annotations

import numpy as np

from ...artifacts import atomic_write_json
from ...compress.calibrate import activation_ranges
from ...data import calibration_batch
from ...data.calibration import folder_calibration  # safe folder walk, checked image decoding
from ...rundir import CALIBRATION_FILE, QUANT_PLAN_FILE
from ...ui import console
from ..context import StageResult


def run(stage, ctx):
    cfg = stage.config
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
    atomic_write_json(ctx.out_dir / QUANT_PLAN_FILE, plan)
    worst = ", ".join(f"{r['layer']} ({r['outlier_ratio']:.1f}x)" for r in outliers[:3])
    console.print(f"  quantize: {len(calib)} calibration samples ({source['source']}); widest activation ranges: {worst}")
    return StageResult(details={"plan": plan, "activation_ranges": ranges, "outliers": outliers})
