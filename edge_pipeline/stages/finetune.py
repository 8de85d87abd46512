"""`finetune`: recover accuracy after restructure/prune, optionally distilling from an earlier stage."""

from __future__ import annotations

from pydantic import Field

from .base import Stage, Strict, register_stage
from .train import TrainingConfig


class DistillConfig(Strict):
    teacher: str = Field(description="Name of an earlier model stage (e.g. train).")
    temperature: float = Field(4.0, gt=0, le=100)
    alpha: float = Field(0.7, ge=0, le=1, description="Weight of the soft KD term; 1 - alpha weighs the labels.")


class FinetuneConfig(TrainingConfig):
    epochs: int = Field(8, ge=0, le=100000)
    lr: float = Field(0.01, gt=0, le=10)
    distill: DistillConfig | None = None


@register_stage
class FinetuneStage(Stage):
    type = "finetune"
    Config = FinetuneConfig
    produces = "model"
    needs = ("model",)

    def check(self, index, earlier):
        distill = self.config.distill
        if distill is None:
            return []
        models = [name for name, stage in earlier if stage.produces == "model"]
        if distill.teacher not in models:
            return [(("distill", "teacher"), f"{distill.teacher!r} is not an earlier model stage; choose one of {models}")]
        return []

    def run(self, ctx):
        from ..compress.distill import distillation_loss
        from ..pipeline import StageResult
        from ..training import cross_entropy, fit

        model = ctx.load_model()
        cfg = self.config
        if cfg.distill:
            teacher = ctx.load_model(cfg.distill.teacher).module
            loss = distillation_loss(teacher, cfg.distill.temperature, cfg.distill.alpha, cfg.label_smoothing)
        else:
            loss = cross_entropy(cfg.label_smoothing)
        history = fit(model.module, ctx.data, cfg, ctx.seed, loss, ctx.spec.name)
        return StageResult(model, details={"history": history, "teacher": cfg.distill.teacher if cfg.distill else None})
