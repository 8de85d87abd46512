"""Running the `train` stage (imported only when it runs; see `train.py` for its config)."""

from __future__ import annotations

import torch

from ...compress.pruning.criteria import bn_l1_penalty
from ...errors import UserError
from ...models import BaseSpec, build_model, load_initial_weights
from ...models.store import TrackedModel
from ...training import cross_entropy, fit
from ...ui import console
from ..context import StageResult
from ..train import TrainingConfig
from .batchnorm_check import batchnorm_check


def run(stage, ctx):
    data, mcfg = ctx.data, ctx.recipe.model
    if mcfg.num_classes is not None and mcfg.num_classes != data.num_classes:
        # Labels index the logits: fewer outputs crash training, more leave outputs no label names.
        raise UserError(f"{ctx.recipe.source}: model.num_classes is {mcfg.num_classes} but the data has "
                        f"{data.num_classes} classes; remove model.num_classes (the default is the data's count)")
    base = BaseSpec(
        arch=mcfg.arch, num_classes=mcfg.num_classes or data.num_classes, in_channels=data.in_channels,
        image_size=data.image_size, width=mcfg.width,
    )
    torch.manual_seed(ctx.seed)
    module = build_model(base)
    details = {}
    if mcfg.weights:
        left = load_initial_weights(module, mcfg.weights, mcfg.arch, strict=mcfg.strict)
        if left:
            console.print(f"  weights: {len(left)} tensors kept their fresh init (shape differs): {', '.join(left[:4])}")
        details["weights"] = {"file": mcfg.weights, "fresh_init": left}
    history = fit(module, data, stage.config, ctx.seed, cross_entropy(stage.config.label_smoothing), "train",
                  regularizer=bn_regularizer(stage.config))
    checked = batchnorm_check(module, data, stage.config.refresh_bn, stage.config.epochs, ctx.spec.name, ctx.seed)
    if checked is not None:
        details["batchnorm"] = checked
    meta = {
        "class_names": data.class_names, "mean": data.mean, "std": data.std,
        "input_shape": list(data.input_shape), "layout": "NCHW",
    }
    return StageResult(TrackedModel(module, base, [], meta), details={**details, "history": history})


def bn_regularizer(cfg: TrainingConfig):
    """The `fit` regularizer a training config asks for (None: plain loss)."""
    if not cfg.bn_l1:
        return None

    return bn_l1_penalty(cfg.bn_l1)
