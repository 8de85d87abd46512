"""`prune`: structured channel pruning that really removes channels, or unstructured magnitude pruning.

Structured (`method`: l1, l2, bn_scale, taylor, random): give one target, `ratio` (fraction of output
channels removed), `target_macs` or `target_params` (fraction of the incoming model's MACs /
parameters to keep); `allocation: per_layer` removes the same fraction from every layer group,
`global` ranks all channels together. `steps: N` reaches the target in N prune-then-finetune rounds.
Unstructured (`method: magnitude`): `sparsity` = fraction of conv/linear weights set to zero.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from ..compress.names import Allocation, Criterion
from .base import Stage, StageConfig, register_stage
from .train import TrainingConfig

TARGETS = ("ratio", "target_macs", "target_params")


class RoundFinetuneConfig(TrainingConfig):
    """Training after each pruning round (plain cross-entropy; 0 epochs: prune only)."""

    name: None = Field(None, exclude=True)  # not a stage: no name
    epochs: int = Field(0, ge=0, le=100000)
    lr: float = Field(0.01, gt=0, le=10)


class PruneConfig(StageConfig):
    # One Literal (not a union of two), so a bad value gets one error listing every choice.
    method: Literal[Criterion, "magnitude"] = Field(
        "l1", description="Channel importance criterion, or `magnitude` for unstructured weight sparsity."
    )
    ratio: float | None = Field(None, gt=0, lt=1, description="Fraction of output channels removed (default 0.5 if no target).")
    target_macs: float | None = Field(None, gt=0, lt=1, description="Keep at most this fraction of the incoming model's MACs.")
    target_params: float | None = Field(None, gt=0, lt=1, description="Keep at most this fraction of the incoming model's parameters.")
    sparsity: float | None = Field(None, gt=0, lt=1, description="magnitude: fraction of weights set to zero (default 0.5).")
    allocation: Allocation = Field("per_layer", description="Same fraction per layer group, or one global ranking.")
    scope: Literal["global", "per_layer"] = Field("global", description="magnitude: one threshold for all layers or per layer.")
    round_to: int | None = Field(None, ge=1, le=256, description="Keep channel counts a multiple of this.")
    max_ratio: float = Field(0.9, gt=0, lt=1, description="No layer group loses more than this fraction of its channels.")
    ignore: list[str] = Field(default_factory=list, description="Module names whose output channels (or weights) are kept.")
    steps: int = Field(1, ge=1, le=100, description="Reach the target in this many prune-then-finetune rounds.")
    finetune: RoundFinetuneConfig = Field(default_factory=RoundFinetuneConfig, description="Training after each round.")
    calibration_samples: int = Field(256, ge=8, le=100000, description="taylor: labelled train samples for the gradients.")

    @model_validator(mode="before")
    @classmethod
    def _default_target(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if data.get("method", "l1") == "magnitude":
            data.setdefault("sparsity", 0.5)
        elif all(data.get(key) is None for key in TARGETS):
            data["ratio"] = 0.5
        return data

    @model_validator(mode="after")
    def _one_target(self):
        given = [key for key in TARGETS if getattr(self, key) is not None]
        if self.method == "magnitude":
            if given:
                raise ValueError(f"method magnitude takes `sparsity`, not {given[0]}")
        else:
            if self.sparsity is not None:
                raise ValueError(f"`sparsity` is for method magnitude; method {self.method} takes ratio, target_macs or target_params")
            if len(given) > 1:
                raise ValueError(f"give one of ratio, target_macs, target_params (got {', '.join(given)})")
            if self.ratio is not None and self.ratio > self.max_ratio:
                raise ValueError(f"ratio {self.ratio} is above max_ratio {self.max_ratio}; raise max_ratio")
        return self



@register_stage
class PruneStage(Stage):
    type = "prune"
    Config = PruneConfig
    config: PruneConfig
    produces = "model"
    needs = ("model",)

    @property
    def distributed(self) -> bool:
        """Ranks > 0 of a distributed run join only if the rounds train."""
        return self.config.finetune.epochs > 0


