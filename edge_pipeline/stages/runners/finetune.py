"""Running the `finetune` stage (imported only when it runs; see `finetune.py` for its config)."""

from __future__ import annotations

from typing import Any

import torch

from ...compress.distill import DistillLoss, FeatureSpec, pair_layers
from ...compress.pruning.unstructured import keep_zeros, masks_from_edits
from ...errors import UserError
from ...models.store import load_model
from ...training import LossFn, cross_entropy, fit
from ..context import StageResult
from ..finetune import checkpoint_folder
from .batchnorm_check import batchnorm_check
from .train import bn_regularizer


def run(stage, ctx):
    model = ctx.load_model()
    cfg = stage.config
    details: dict[str, Any] = {"teacher": None}
    loss: LossFn = cross_entropy(cfg.label_smoothing)
    extra: list[torch.nn.Parameter] = []
    distill_loss: DistillLoss | None = None
    if cfg.distill:
        distill_loss, info = _distill_loss(stage, ctx, model.module)
        loss, extra = distill_loss, distill_loss.parameters()
        details.update(info)
    masks = masks_from_edits(model.module, model.edits)
    history = fit(model.module, ctx.data, cfg, ctx.seed, loss, ctx.spec.name, extra_params=extra,
                  regularizer=bn_regularizer(cfg), after_step=keep_zeros(masks) if masks else None)
    if distill_loss is not None:
        details["final_terms"] = {k: round(v, 6) for k, v in distill_loss.terms().items()}
        distill_loss.close()  # its hooks on the student come off before the BatchNorm check runs it
    checked = batchnorm_check(model.module, ctx.data, cfg.refresh_bn, cfg.epochs, ctx.spec.name, ctx.seed)
    if checked is not None:
        details["batchnorm"] = checked
    if masks:
        details["kept_zero_weights"] = sum(int((~m).sum()) for m in masks.values())
    return StageResult(model, details={"history": history, **details})


def _distill_loss(stage, ctx, student: torch.nn.Module) -> tuple[DistillLoss, dict[str, Any]]:
    d = stage.config.distill
    where = f"stages[{ctx.spec.index}].finetune.distill"
    folder = None
    if d.teacher in [s.name for s in ctx.recipe.stages[: ctx.spec.index]]:
        teacher = ctx.load_model(d.teacher).module
    else:
        folder = checkpoint_folder(d.teacher)
        if folder is None:
            raise UserError(f"{where}.teacher: {d.teacher!r} has no structure.json (a folder saved by edge-pipeline)")
        teacher = load_model(folder).module
    example = ctx.data.sample("train", 2)
    with torch.no_grad():
        try:  # a teacher folder from elsewhere may be built for other inputs (channels, size)
            t_out = teacher.eval()(example)
        except (RuntimeError, ValueError) as exc:
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
            raise UserError(f"{where}.teacher: {d.teacher!r} does not run on this recipe's input "
                            f"{tuple(example.shape[1:])} ({reason}); distill from a model of the same data") from None
        s_out = student.eval()(example)
    if t_out.shape != s_out.shape:
        raise UserError(f"{where}.teacher: the teacher outputs {tuple(t_out.shape[1:])} per sample, the student "
                        f"{tuple(s_out.shape[1:])}; distill from a model of the same task")
    features = None
    if d.features is not None:
        try:
            pairs = pair_layers(student, teacher, example, d.features.layers)
        except ValueError as exc:
            raise UserError(f"{where}.features.layers: {exc}") from None
        features = FeatureSpec(pairs, d.features.loss, d.features.weight, d.features.adapter)
    loss = DistillLoss(teacher, d.temperature, d.alpha, stage.config.label_smoothing, d.objective, features,
                       student, example)
    info = {
        "teacher": d.teacher, "teacher_folder": str(folder) if folder else None, "objective": d.objective,
        "feature_pairs": [list(p) for p in features.pairs] if features else [],
        "adapters": [type(a).__name__ for a in loss.adapters],
    }
    return loss, info
