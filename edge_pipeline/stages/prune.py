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

from .base import Stage, StageConfig, register_stage
from .train import TrainingConfig

STRUCTURED = ("l1", "l2", "bn_scale", "taylor", "random")
TARGETS = ("ratio", "target_macs", "target_params")


class RoundFinetuneConfig(TrainingConfig):
    """Training after each pruning round (plain cross-entropy; 0 epochs: prune only)."""

    name: None = Field(None, exclude=True)  # not a stage: no name
    epochs: int = Field(0, ge=0, le=100000)
    lr: float = Field(0.01, gt=0, le=10)


class PruneConfig(StageConfig):
    method: Literal["l1", "l2", "bn_scale", "taylor", "random", "magnitude"] = Field(
        "l1", description="Channel importance criterion, or `magnitude` for unstructured weight sparsity."
    )
    ratio: float | None = Field(None, gt=0, lt=1, description="Fraction of output channels removed (default 0.5 if no target).")
    target_macs: float | None = Field(None, gt=0, lt=1, description="Keep at most this fraction of the incoming model's MACs.")
    target_params: float | None = Field(None, gt=0, lt=1, description="Keep at most this fraction of the incoming model's parameters.")
    sparsity: float | None = Field(None, gt=0, lt=1, description="magnitude: fraction of weights set to zero (default 0.5).")
    allocation: Literal["per_layer", "global"] = Field("per_layer", description="Same fraction per layer group, or one global ranking.")
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

    def target(self):
        from ..compress.pruning import Target

        if self.ratio is not None:
            return Target("ratio", self.ratio)
        if self.target_macs is not None:
            return Target("macs", self.target_macs)
        return Target("params", self.target_params)


@register_stage
class PruneStage(Stage):
    type = "prune"
    Config = PruneConfig
    produces = "model"
    needs = ("model",)

    @property
    def distributed(self) -> bool:
        """Ranks > 0 of a distributed run join only if the rounds train."""
        return self.config.finetune.epochs > 0

    def run(self, ctx):
        from .. import distributed
        from ..errors import UserError
        from ..evaluation import count_macs, count_params
        from ..pipeline import StageResult
        from ..ui import console

        model = ctx.load_model()
        cfg = self.config
        for name in cfg.ignore:
            try:
                model.module.get_submodule(name)
            except AttributeError:
                raise UserError(f"stages[{ctx.spec.index}].prune.ignore: no module named {name!r} in the model") from None
        shape = ctx.data.input_shape
        base = {"macs": count_macs(model.module, shape), "params": count_params(model.module)}
        widths = _widths(model.module)
        rounds = []
        for step in range(1, cfg.steps + 1):
            edit = None
            if distributed.is_leader():
                edit = self._prune_round(ctx, model, step, base, widths)
            if distributed.active():  # every rank continues from the leader's decision
                edit = self._follow_leader(model, edit)
            model.edits.append(edit)
            info = {"step": step, "macs": count_macs(model.module, shape), "params": count_params(model.module)}
            if cfg.finetune.epochs:
                info["history"] = self._finetune(ctx, model, step)
            rounds.append(info)
            console.print(f"  prune round {step}/{cfg.steps}: {_describe(edit)}; "
                          f"MACs {info['macs'] / base['macs']:.1%}, params {info['params'] / base['params']:.1%} of the input model")
        after = _widths(model.module)
        details = {
            "prune": model.edits[-1].summary, "rounds": rounds, "method": cfg.method,
            "channels": {path: [widths[path], after[path]] for path in after if path in widths and widths[path] != after[path]},
            "macs": [base["macs"], rounds[-1]["macs"]], "params": [base["params"], rounds[-1]["params"]],
        }
        if cfg.method != "magnitude":
            details["target"] = {"kind": cfg.target().kind, "value": cfg.target().value}
        return StageResult(model, details=details)

    def _prune_round(self, ctx, model, step: int, base: dict[str, int], widths: dict[str, int]):
        import math

        import torch

        from ..compress.pruning import Target, magnitude_prune, prune_channels
        from ..evaluation import count_macs, count_params

        cfg = self.config
        if cfg.method == "magnitude":
            return magnitude_prune(model.module, cfg.sparsity * step / cfg.steps, cfg.scope, cfg.ignore)
        target = cfg.target()
        if target.kind == "ratio":  # the same fraction per round, compounding to `ratio`
            value = 1.0 - (1.0 - target.value) ** (1.0 / cfg.steps)
        else:  # a straight line from the input model's cost to the target, relative to the current model
            final = target.value * base[target.kind]
            wanted = base[target.kind] - (base[target.kind] - final) * step / cfg.steps
            now = count_macs(model.module, ctx.data.input_shape) if target.kind == "macs" else count_params(model.module)
            value = min(wanted / now, 1.0 - 1e-9)
        calibration = self._calibration(ctx) if cfg.method == "taylor" else None
        example = torch.zeros(ctx.data.input_shape)
        # max_ratio holds against the stage's input model, whatever the number of rounds.
        floors = {path: math.ceil((1.0 - cfg.max_ratio) * n - 1e-9) for path, n in widths.items()}
        return prune_channels(model.module, example, Target(target.kind, value), cfg.method, cfg.allocation,
                              cfg.round_to, cfg.max_ratio, cfg.ignore, ctx.seed + step - 1, calibration, floors)

    def _calibration(self, ctx):
        """The quantize stage's stratified sample of the train split, with its labels."""
        import torch

        from ..data import calibration_batch, stratified_indices

        n = self.config.calibration_samples
        inputs = calibration_batch(ctx.data, n, ctx.seed)
        labels = torch.as_tensor(ctx.data.train_labels[stratified_indices(ctx.data.train_labels, n, ctx.seed)])
        return inputs, labels

    @staticmethod
    def _follow_leader(model, edit):
        """Rank 0 decides; the others replay its edit and take its weights (bitwise the same model)."""
        from .. import distributed
        from ..compress.edits import replay

        edit = distributed.broadcast_object(edit)
        state = distributed.broadcast_object({k: v.cpu() for k, v in model.module.state_dict().items()}
                                             if distributed.is_leader() else None)
        if not distributed.is_leader():
            replay(model.module, [edit])
            model.module.load_state_dict(state, strict=True)
        return edit

    def _finetune(self, ctx, model, step: int):
        from ..compress.pruning.unstructured import keep_zeros, masks_from_edits
        from ..training import cross_entropy, fit
        from .train import bn_regularizer

        cfg = self.config.finetune
        masks = masks_from_edits(model.module, model.edits)
        return fit(model.module, ctx.data, cfg, ctx.seed + step, cross_entropy(cfg.label_smoothing),
                   f"{ctx.spec.name} round {step}", regularizer=bn_regularizer(cfg),
                   after_step=keep_zeros(masks) if masks else None)


def _widths(module) -> dict[str, int]:
    """Output channels of every conv and linear layer."""
    from torch import nn

    return {n: m.out_channels if isinstance(m, nn.Conv2d) else m.out_features
            for n, m in module.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}


def _describe(edit) -> str:
    s = edit.summary
    if edit.transform == "magnitude":
        return f"{s['sparsity']:.1%} of {s['weights']} weights are zero"
    return f"{s['classes']['removed']} of {s['classes']['prunable']} prunable channel classes removed, {s['resized_modules']} modules resized"
