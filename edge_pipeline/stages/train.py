"""`train`: build the recipe's model (optionally from local weights) and train it."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from .base import Stage, StageConfig, register_stage


class TrainingConfig(StageConfig):
    """Optimizer settings shared by `train` and `finetune`."""

    epochs: int = Field(15, ge=0, le=100000, description="Passes over the train split (0: keep the incoming weights).")
    lr: float = Field(0.05, gt=0, le=10, description="Peak learning rate.")
    optimizer: Literal["sgd", "adamw"] = Field("sgd", description="sgd (Nesterov momentum) or adamw (decoupled weight decay).")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum (adamw ignores it).")
    weight_decay: float = Field(5e-4, ge=0, le=1, description="L2 penalty (sgd) or decoupled decay (adamw), on every parameter.")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="Cross-entropy label smoothing.")
    schedule: Literal["cosine", "constant"] = Field("cosine", description="Learning-rate schedule after warmup.")
    warmup_epochs: int = Field(0, ge=0, description="Linear warmup from near 0 to lr over this many epochs.")
    batch_size: int | None = Field(None, ge=1, description="Default: data.batch_size.")
    bn_l1: float = Field(
        0.0, ge=0, le=1,
        description="Network Slimming: add bn_l1 * sum |BatchNorm gamma| to the loss (e.g. 1e-4), so a later "
        "`prune: {method: bn_scale}` finds channels the model learned to switch off.",
    )

    @model_validator(mode="after")
    def _warmup_fits(self):
        if self.epochs and self.warmup_epochs > self.epochs:
            raise ValueError(f"warmup_epochs ({self.warmup_epochs}) must be <= epochs ({self.epochs})")
        return self


class TrainConfig(TrainingConfig):
    pass


@register_stage
class TrainStage(Stage):
    type = "train"
    Config = TrainConfig
    config: TrainConfig
    produces = "model"
    distributed = True  # ranks > 0 of a distributed run train with the leader

    def check(self, index, earlier):
        if any(stage.produces == "model" for _, stage in earlier):
            return [((), "train builds a new model; put it first (use finetune to continue training)")]
        return []

