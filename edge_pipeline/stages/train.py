"""`train`: build the recipe's model (optionally from local weights) and train it.

BatchNorm check (`refresh_bn`, also in `finetune`). BatchNorm layers normalize with batch statistics
while training and with running averages in eval mode. With a small momentum (torchvision's
MobileNetV3 uses 0.01) and few steps the running averages never converge: the trained weights are
fine but the saved model is not (train loss 0.44, validation accuracy 12%). After training, the
stage compares accuracy on one validation batch in eval mode with the same batch normalized by its
own statistics (same weights, same images: only the normalization differs); when eval mode is far
below, it re-estimates every BatchNorm's statistics on train images and keeps them only if
validation accuracy improves. The stage details and the report say what it found and did.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, model_validator

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


def _refresh_bn_value(value: Any) -> Any:
    if isinstance(value, bool) or value == "auto":
        return value
    raise ValueError(f"must be auto, true or false, got {value!r}")


RefreshBatchNorm = Annotated[bool | Literal["auto"], BeforeValidator(_refresh_bn_value)]


def refresh_bn_field() -> Any:
    """The `refresh_bn` option, shared by train and finetune."""
    return Field(
        "auto",
        description="Re-estimate BatchNorm running statistics after training (on train images, in eval mode) and "
        "keep them if validation accuracy improves. auto: only when eval-mode accuracy on a validation batch is more "
        "than 5 points below its accuracy with batch statistics (statistics that did not converge, e.g. BN momentum 0.01 and few "
        "steps); true: always (kept unless validation accuracy drops); false: never.",
    )


class TrainConfig(TrainingConfig):
    refresh_bn: RefreshBatchNorm = refresh_bn_field()


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

