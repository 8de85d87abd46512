"""`finetune`: recover accuracy after restructure/prune, optionally distilling from a teacher.

The teacher is an earlier model stage (by name) or a saved model folder from the user
(structure.json + model.safetensors, e.g. another run's `01-train`). Objectives:
- `logits` (default): alpha * Hinton KD + (1 - alpha) * cross-entropy;
- `features`: only the feature term (no labels): TinyBERT's first phase;
- `logits+features`: both (FitNets-style hints on top of KD).
TinyBERT's two phases are two named finetune stages: `objective: features`, then `logits`.
Weights pruned by `prune: {method: magnitude}` stay zero while training.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from ..compress.names import FeatureLoss, Objective
from .base import Stage, Strict, register_stage
from .train import RefreshBatchNorm, TrainingConfig, refresh_bn_field


class FeatureDistillConfig(Strict):
    layers: Literal["auto"] | list[str] | dict[str, str] = Field(
        "auto",
        description="`auto`: the last feature map at each spatial resolution (stage boundaries); a list of module "
        "names present in both models; or a mapping student name -> teacher name.",
    )
    loss: FeatureLoss = Field("mse", description="mse: FitNets/TinyBERT; cosine: DistilBERT.")
    weight: float = Field(1.0, ge=0, le=1000, description="Weight of the feature term in the loss.")
    adapter: Literal["auto", "always"] = Field(
        "auto", description="A learned 1x1 conv on the student side: when channel counts differ (auto) or always."
    )


class DistillConfig(Strict):
    teacher: str = Field(description="An earlier model stage (e.g. train) or a saved model folder.")
    temperature: float = Field(4.0, gt=0, le=100)
    alpha: float = Field(0.7, ge=0, le=1, description="Weight of the soft KD term; 1 - alpha weighs the labels.")
    objective: Objective = Field(
        "logits", description="Default: logits, or logits+features when `features` is given."
    )
    features: FeatureDistillConfig | None = None

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if data.get("objective") is None:
            data["objective"] = "logits+features" if data.get("features") is not None else "logits"
        if "features" in data["objective"] and data.get("features") is None:
            data["features"] = {}
        return data

    @model_validator(mode="after")
    def _consistent(self):
        if self.objective == "logits" and self.features is not None:
            raise ValueError("`features` is set but objective is logits; use objective: logits+features (or features)")
        return self


class FinetuneConfig(TrainingConfig):
    epochs: int = Field(8, ge=0, le=100000)
    lr: float = Field(0.01, gt=0, le=10)
    distill: DistillConfig | None = None
    refresh_bn: RefreshBatchNorm = refresh_bn_field()


def checkpoint_folder(teacher: str) -> Path | None:
    """The folder if `teacher` names a saved model on disk."""
    path = Path(teacher).expanduser()
    return path if (path / "structure.json").is_file() else None


@register_stage
class FinetuneStage(Stage):
    type = "finetune"
    Config = FinetuneConfig
    config: FinetuneConfig
    produces = "model"
    needs = ("model",)
    distributed = True  # ranks > 0 of a distributed run train with the leader

    def check(self, index, earlier):
        distill = self.config.distill
        if distill is None:
            return []
        models = [name for name, stage in earlier if stage.produces == "model"]
        if distill.teacher in models or checkpoint_folder(distill.teacher):
            return []
        return [(("distill", "teacher"), f"{distill.teacher!r} is not an earlier model stage ({', '.join(models)}) "
                 "nor a folder with structure.json and model.safetensors")]


