"""Running the `quantize` stage (imported only when it runs; see `quantize.py` for its config)."""

from __future__ import annotations

import numpy as np

from ...artifacts import atomic_write_json
from ...compress.calibrate import activation_ranges
from ...compress.prepare_int8 import prepare_for_int8
from ...data import calibration_batch
from ...data.calibration import folder_calibration  # safe folder walk, checked image decoding
from ...models.store import save_model
from ...rundir import CALIBRATION_FILE, QUANT_MODEL_DIR, QUANT_PLAN_FILE
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
    methods = None
    if cfg.prepares_model:
        model, methods = prepare_for_int8(
            model, equalize_pairs=cfg.equalize, relu6_to_relu=cfg.relu6_to_relu, bias_correction=cfg.bias_correction,
            calibration=calib, test_loader=lambda: ctx.data.loader("test", batch_size=256), per_channel=cfg.per_channel,
            learned_rounding=cfg.adaround.model_dump() if cfg.adaround else None, seed=ctx.seed)
        save_model(model, ctx.out_dir / QUANT_MODEL_DIR)
        _print_methods(methods)
    ranges = activation_ranges(model.module, calib, batch_size=64)
    outliers = sorted(ranges, key=lambda r: -r["outlier_ratio"])[:5]
    plan = {
        "modes": cfg.modes, "per_channel": cfg.per_channel, "io_type": cfg.io_type,
        "keep_float": cfg.keep_float, "auto_keep_float": cfg.auto_keep_float,
        "gates": {"max_accuracy_drop": cfg.max_accuracy_drop, "min_agreement": cfg.min_agreement},
        "diagnose_samples": cfg.diagnose_samples,
        "calibration": {**source, "samples": int(len(calib))}, "layout": "NHWC",
        "model_stage": ctx.upstream("model").name,
        # Export converts this stage's prepared model (relative to this stage's folder) when there is one.
        "model_dir": QUANT_MODEL_DIR if methods else None,
        "methods": [m["method"] for m in methods[1:]] if methods else [],
    }
    atomic_write_json(ctx.out_dir / QUANT_PLAN_FILE, plan)
    worst = ", ".join(f"{r['layer']} ({r['outlier_ratio']:.1f}x)" for r in outliers[:3])
    console.print(f"  quantize: {len(calib)} calibration samples ({source['source']}); widest activation ranges: {worst}")
    details = {"plan": plan, "activation_ranges": ranges, "outliers": outliers}
    if methods:
        details["methods"] = methods
    return StageResult(details=details)


def _print_methods(methods) -> None:
    for m in methods:
        console.print(f"  quantize: {m['method']:<15} float {m['float_accuracy']:.2%}  simulated int8 {m['int8_accuracy']:.2%} "
                      f"(agreement {m['int8_agreement']:.2%})  {m['seconds']:.1f}s")
