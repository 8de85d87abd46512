"""`prune`: structured filter pruning that really removes channels."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import Stage, StageConfig, register_stage


class PruneConfig(StageConfig):
    method: Literal["l1", "l2", "random"] = Field("l1", description="Filter importance criterion.")
    ratio: float = Field(0.5, gt=0, lt=1, description="Fraction of output channels removed per layer group.")
    round_to: int | None = Field(None, ge=1, le=256, description="Keep channel counts a multiple of this.")
    ignore: list[str] = Field(default_factory=list, description="Module names whose output channels are kept.")


@register_stage
class PruneStage(Stage):
    type = "prune"
    Config = PruneConfig
    produces = "model"
    needs = ("model",)

    def run(self, ctx):
        import torch

        from ..compress.prune import prune_filters
        from ..errors import UserError
        from ..pipeline import StageResult
        from ..ui import console

        model = ctx.load_model()
        cfg = self.config
        for name in cfg.ignore:
            try:
                model.module.get_submodule(name)
            except AttributeError:
                raise UserError(f"stages[{ctx.spec.index}].prune.ignore: no module named {name!r} in the model") from None
        example = torch.zeros(ctx.data.input_shape)
        edit = prune_filters(model.module, example, cfg.ratio, cfg.method, cfg.round_to, cfg.ignore, ctx.seed)
        model.edits.append(edit)
        console.print(f"  prune: {len(edit.summary['groups'])} layer groups, {edit.summary['resized_modules']} modules resized")
        return StageResult(model, details={"prune": edit.summary})
