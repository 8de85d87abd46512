"""`prune`: structured channel pruning that really removes channels, or unstructured magnitude pruning.

Structured (`method`: l1, l2, bn_scale, taylor, random): give one target, `ratio` (fraction of output
channels removed), `target_macs` or `target_params` (fraction of the incoming model's MACs /
parameters to keep), or a latency budget on a device: `target_latency` (fraction of the incoming
model's predicted latency) or `target_latency_ms`, for the precision the recipe will ship
(`precision`; default: int8 if a later quantize stage makes int8, else float32), predicted by the
device's latency model (measured op by op on `device` through its own transport; see
`edge-pipeline profile --predict`). `round_to: auto` keeps channel counts a multiple of the device's
kernel tile for that precision, as measured. `allocation: per_layer` removes the same fraction from
every layer group, `global` ranks all channels together (for a latency target: by importance per
predicted millisecond saved). `steps: N` reaches the target in N prune-then-finetune rounds.
Unstructured (`method: magnitude`): `sparsity` = fraction of conv/linear weights set to zero.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from ..compress.names import Allocation, Criterion
from ..profiling.devices import get_device
from .base import Stage, StageConfig, register_stage, unknown_devices
from .train import TrainingConfig

TARGETS = ("ratio", "target_macs", "target_params", "target_latency", "target_latency_ms")
LATENCY_TARGETS = ("target_latency", "target_latency_ms")


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
    target_latency: float | None = Field(
        None, gt=0, lt=1, description="Keep at most this fraction of the incoming model's predicted latency on `device`.")
    target_latency_ms: float | None = Field(
        None, gt=0, le=1e6, description="At most this many predicted milliseconds on `device`.")
    device: str | None = Field(None, description="Latency targets: the device whose latency model prices the model "
                               "(devices/*.yaml; default host).")
    latency_from: Literal["predicted", "measured"] = Field(
        "predicted", description="Latency targets: `measured` also converts each candidate and times it on the device, "
        "correcting the allocation until the target holds as measured (slower: a conversion per try).")
    precision: Literal["float32", "int8"] | None = Field(
        None, description="Latency targets: the precision priced (default: int8 if the recipe quantizes to int8, else float32).")
    sparsity: float | None = Field(None, gt=0, lt=1, description="magnitude: fraction of weights set to zero (default 0.5).")
    allocation: Allocation = Field("per_layer", description="Same fraction per layer group, or one global ranking.")
    scope: Literal["global", "per_layer"] = Field("global", description="magnitude: one threshold for all layers or per layer.")
    round_to: int | Literal["auto"] | None = Field(
        None, description="Keep channel counts a multiple of this; `auto`: the device's measured kernel tile (needs a "
        "latency target or `device`).")
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
                raise ValueError(f"`sparsity` is for method magnitude; method {self.method} takes one of {', '.join(TARGETS)}")
            if len(given) > 1:
                raise ValueError(f"give one of {', '.join(TARGETS)} (got {', '.join(given)})")
            if self.ratio is not None and self.ratio > self.max_ratio:
                raise ValueError(f"ratio {self.ratio} is above max_ratio {self.max_ratio}; raise max_ratio")
        latency = any(getattr(self, key) is not None for key in LATENCY_TARGETS)
        if not latency and self.precision is not None:
            raise ValueError("`precision` is for latency targets (target_latency, target_latency_ms)")
        if not latency and self.latency_from != "predicted":
            raise ValueError("`latency_from` is for latency targets (target_latency, target_latency_ms)")
        if self.round_to == "auto" and not latency and self.device is None:
            raise ValueError("round_to: auto measures the kernel tile of a device: give `device` (or a latency target)")
        if isinstance(self.round_to, int) and not 1 <= self.round_to <= 256:
            raise ValueError(f"round_to must be in [1, 256] or auto, got {self.round_to}")
        return self

    @property
    def latency_target(self) -> bool:
        return any(getattr(self, key) is not None for key in LATENCY_TARGETS)

    @property
    def latency_device(self) -> str | None:
        """The device of the latency model, when the stage uses one."""
        if self.latency_target or self.round_to == "auto":
            return self.device or "host"
        return None



@register_stage
class PruneStage(Stage):
    type = "prune"
    Config = PruneConfig
    config: PruneConfig
    produces = "model"
    needs = ("model",)

    def check(self, index, earlier):
        device = self.config.latency_device
        return unknown_devices([device], "device") if device is not None else []

    def key_inputs(self, recipe, index):
        """A latency target's decisions depend on the device file and the precision priced."""
        device = self.config.latency_device
        if device is None:
            return {}
        return {"device": get_device(device).model_dump(mode="json"), "precision": priced_precision(self.config, recipe)}

    @property
    def distributed(self) -> bool:
        """Ranks > 0 of a distributed run join only if the rounds train."""
        return self.config.finetune.epochs > 0




def priced_precision(cfg: PruneConfig, recipe) -> str:
    """The precision a latency target prices: the stage's, else int8 if a quantize stage makes int8."""
    if cfg.precision is not None:
        return cfg.precision
    for spec in getattr(recipe, "stages", []):
        if spec.type == "quantize":
            modes = spec.config.mode if isinstance(spec.config.mode, list) else [spec.config.mode]
            if "int8" in modes:
                return "int8"
    return "float32"
