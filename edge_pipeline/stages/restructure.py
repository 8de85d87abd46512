"""`restructure`: swap layers for cheaper structures (each transform is a key under the stage)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from .base import Stage, StageConfig, Strict, register_stage


class SelectionConfig(Strict):
    include: list[str] = Field(default_factory=lambda: ["*"], description="Module-name globs to transform.")
    exclude: list[str] = Field(default_factory=list, description="Module-name globs to leave alone.")
    min_channels: int = Field(16, ge=1, description="Skip layers with fewer input or output channels.")
    skip_first: bool = Field(True, description="Leave the first convolution alone.")
    skip_classifier: bool = Field(True, description="Leave the logits layer alone.")

    def selection(self):
        from ..compress.select import Selection

        return Selection(self.include, self.exclude, self.min_channels, self.skip_first, self.skip_classifier)


class DepthwiseSeparableConfig(SelectionConfig):
    activation: Literal["relu", "relu6", "hardswish", "none"] = "relu"
    init: Literal["svd", "random"] = "svd"


class RestructureConfig(StageConfig):
    depthwise_separable: DepthwiseSeparableConfig | None = None

    @model_validator(mode="after")
    def _something_to_do(self):
        if not self.transforms():
            raise ValueError("restructure needs at least one transform, e.g. `depthwise_separable: {}`")
        return self

    def transforms(self) -> list[tuple[str, Strict]]:
        return [(name, getattr(self, name)) for name in type(self).model_fields if name != "name" and getattr(self, name) is not None]


def _apply_depthwise(module, cfg: DepthwiseSeparableConfig):
    from ..compress.depthwise import depthwise_separable

    return depthwise_separable(module, cfg.selection(), cfg.activation, cfg.init)


APPLY = {"depthwise_separable": _apply_depthwise}


@register_stage
class RestructureStage(Stage):
    type = "restructure"
    Config = RestructureConfig
    produces = "model"
    needs = ("model",)

    def run(self, ctx):
        from ..errors import UserError
        from ..pipeline import StageResult
        from ..ui import console

        model = ctx.load_model()
        details = {}
        for name, cfg in self.config.transforms():
            edit = APPLY[name](model.module, cfg)
            if not edit.ops:
                raise UserError(
                    f"{ctx.spec.name}.{name}: no layer matched (min_channels={cfg.min_channels}, "
                    f"include={cfg.include}, exclude={cfg.exclude}); loosen the selection or drop the transform"
                )
            model.edits.append(edit)
            details[name] = edit.summary
            console.print(f"  {name}: replaced {len(edit.ops)} layer(s)")
        return StageResult(model, details=details)
