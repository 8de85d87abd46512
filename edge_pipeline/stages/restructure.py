"""`restructure`: swap layers for cheaper structures; each transform is a key under the stage.

Transforms live in a registry (name -> config class, apply function, one-line summary); the stage's
config is generated from it, so adding a transform is one `@transform(...)` function here plus its
algorithm in `compress/`. Transforms run in the order the recipe writes them (recorded as `order`
in the resolved recipe, so reordering them changes the cache key). Each is measured on calibration
data against the model right before it: params and MACs before/after, layers replaced, and the
reconstruction error of every replaced layer and of the logits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, create_model, model_serializer, model_validator

from ..registry import Registry
from .base import Stage, StageConfig, Strict, register_stage

Activation = Literal["none", "relu", "relu6", "hardswish"]


class SelectionConfig(Strict):
    include: list[str] = Field(default_factory=lambda: ["*"], description="Module-name globs to transform.")
    exclude: list[str] = Field(default_factory=list, description="Module-name globs to leave alone.")
    min_channels: int = Field(16, ge=1, description="Skip layers with fewer input or output channels.")
    skip_first: bool = Field(True, description="Leave the first convolution alone.")
    skip_classifier: bool = Field(True, description="Leave the logits layer alone.")


class RankConfig(Strict):
    """How many components a factorization keeps: `rank`, or `energy`, not both."""

    rank: int | None = Field(None, ge=1, description="Components kept (capped at the layer's full rank).")
    energy: float | None = Field(None, gt=0, le=1, description="Smallest rank keeping this fraction of the squared singular values.")
    only_if_smaller: bool = Field(True, description="Skip a layer whose factorized form would not have fewer weights.")

    @model_validator(mode="after")
    def _one_of(self):
        if self.rank is not None and self.energy is not None:
            raise ValueError("give `rank` or `energy`, not both")
        return self


class DepthwiseSeparableConfig(SelectionConfig):
    activation: Activation | None = Field(
        None, description="Between the parts. Default: none for the separable block (linear; the SVD start is "
        "exact, and Xception found no activation best), relu for the inverted residual (MobileNetV2).")
    init: Literal["svd", "random"] = "svd"
    inverted_residual: bool = Field(False, description="MobileNetV2 block: expand 1x1, depthwise, project 1x1, residual.")
    expansion: int = Field(6, ge=1, le=16, description="Inverted residual: hidden channels = expansion x input channels.")
    residual: bool = Field(True, description="Inverted residual: add the input where the shapes allow.")

    @model_validator(mode="after")
    def _inverted_options(self):
        # Compared with the defaults, not with what was written: a resolved recipe lists every field.
        loose = [f for f in ("expansion", "residual") if getattr(self, f) != type(self).model_fields[f].default]
        if loose and not self.inverted_residual:
            raise ValueError(f"{', '.join(sorted(loose))} only apply with `inverted_residual: true`")
        return self

    def block_activation(self) -> str:
        return self.activation or ("relu" if self.inverted_residual else "none")


class GroupedPointwiseConfig(SelectionConfig):
    groups: int = Field(4, ge=2, le=64, description="Groups per 1x1 conv (rounded down per layer to a divisor of its channels).")
    init: Literal["fit", "random"] = Field("fit", description="fit: the block-diagonal part of the un-shuffled weights.")


class FactorizeConfig(SelectionConfig, RankConfig):
    rank: int | None = Field(None, ge=1, description="Intermediate channels. Default (with no energy): the layer's "
                             "output channels, as Inception v3.")
    activation: Activation = Field("none", description="Between the kx1 and 1xk convs (with BN if not none).")
    init: Literal["svd", "random"] = "svd"


class DecomposeConfig(SelectionConfig):
    mid_ratio: float = Field(1.0, gt=0, le=4, description="Middle channels = round(mid_ratio x min(in, out)).")
    activation: Activation = Field("none", description="Between the 3x3 convs (with BN if not none).")
    init: Literal["fit", "random"] = Field("fit", description="fit: the stacked kernels fitted to the original kernel.")
    only_if_smaller: bool = Field(True, description="Skip a layer whose stack would not have fewer weights.")


LayerKind = Literal["conv", "linear"]


def _all_layer_kinds() -> list[LayerKind]:
    return ["conv", "linear"]


class LowRankConfig(SelectionConfig, RankConfig):
    energy: float | None = Field(0.8, gt=0, le=1, description="Smallest rank keeping this fraction of the squared singular values.")
    layers: list[LayerKind] = Field(default_factory=_all_layer_kinds, min_length=1, description="Which layer kinds to factorize.")
    init: Literal["svd", "random"] = "svd"

    @model_validator(mode="before")
    @classmethod
    def _rank_replaces_energy(cls, data: Any) -> Any:
        # `energy` has a default; a recipe that gives `rank` means "rank instead".
        if isinstance(data, dict) and data.get("rank") is not None and "energy" not in data:
            data = {**data, "energy": None}
        return data


class GapHeadConfig(SelectionConfig):
    min_channels: int = Field(1, ge=1, description="Skip heads with fewer input or output features.")
    skip_classifier: bool = Field(False, description="The classifier is usually the layer a GAP head replaces.")
    init: Literal["fit", "average", "random"] = Field(
        "fit", description="fit: least squares on calibration data; average: weights summed over positions.")


class ShareConfig(SelectionConfig):
    init: Literal["first", "mean"] = Field("first", description="Shared weights: the first block's, or the mean of all.")


# ---------------------------------------------------------------------------------------------
# The registry


@dataclass(frozen=True)
class Transform:
    """A transform's recipe key, typed config and one-line summary; its code is in `runners/restructure.py`
    (`APPLY`, keyed by the same names), imported only when the stage runs."""

    name: str
    Config: type[SelectionConfig]
    summary: str


TRANSFORMS: Registry[Transform] = Registry("restructure transform")
for _transform in (
    Transform("depthwise_separable", DepthwiseSeparableConfig,
              "kxk conv -> depthwise kxk + pointwise 1x1 (or a MobileNetV2 inverted residual)"),
    Transform("grouped_pointwise", GroupedPointwiseConfig, "1x1 conv -> grouped 1x1 conv + channel shuffle (ShuffleNet)"),
    Transform("factorize", FactorizeConfig, "kxk conv -> kx1 conv + 1xk conv (Inception v3)"),
    Transform("decompose", DecomposeConfig, "5x5 / 7x7 conv -> stacked 3x3 convs (Inception v2)"),
    Transform("low_rank", LowRankConfig, "Linear / conv -> two thinner layers by truncated SVD"),
    Transform("gap_head", GapHeadConfig, "flatten + fully-connected head -> global average pooling + 1x1 projection"),
    Transform("share", ShareConfig, "repeated identical blocks -> one set of weights (ALBERT)"),
):
    TRANSFORMS.register(_transform.name, _transform)


# ---------------------------------------------------------------------------------------------
# The stage config, generated from the registry


class _RestructureBase(StageConfig):
    calibration_samples: int = Field(256, ge=8, le=100000, description="Inputs for data-aware init and reconstruction errors.")
    refresh_bn: bool = Field(True, description="Re-estimate BatchNorm statistics after a lossy transform (AdaBN).")
    order: list[str] = Field(default_factory=list, description="Transform order; filled in from the order they are written.")

    @model_validator(mode="before")
    @classmethod
    def _order_as_written(cls, data: Any) -> Any:
        if not isinstance(data, dict) or data.get("order"):
            return data
        data = dict(data)
        written = [key for key in data if key in TRANSFORMS]
        for key in written:
            if data[key] is None:  # `low_rank:` with no body means "with defaults"
                data[key] = {}
        data["order"] = written
        return data

    @model_validator(mode="after")
    def _order_matches(self):
        given = [name for name in TRANSFORMS.names() if getattr(self, name) is not None]
        if not given:
            known = ", ".join(TRANSFORMS.names())
            raise ValueError(f"restructure needs at least one transform, e.g. `depthwise_separable: {{}}`; known: {known}")
        if sorted(self.order) != sorted(given) or len(set(self.order)) != len(self.order):
            raise ValueError(f"order {self.order} must list each configured transform once: {given}")
        if "share" in self.order and self.order[-1] != "share":
            raise ValueError("`share` must be the last transform: a later one would replace only one of the shared copies")
        return self

    @model_serializer(mode="wrap")
    def _drop_unused(self, handler):
        data = handler(self)
        return {k: v for k, v in data.items() if not (k in TRANSFORMS and v is None)}

    def transforms(self) -> list[tuple[str, SelectionConfig]]:
        return [(name, getattr(self, name)) for name in self.order]


# (annotation, FieldInfo) per transform; the annotations are built at run time, hence Any.
_transform_fields: dict[str, Any] = {t.name: (t.Config | None, Field(None, description=t.summary)) for _, t in TRANSFORMS.items()}
RestructureConfig = create_model(
    "RestructureConfig",
    __base__=_RestructureBase,
    __doc__="The `restructure` stage: one optional block per registered transform.",
    **_transform_fields,
)


@register_stage
class RestructureStage(Stage):
    type = "restructure"
    Config = RestructureConfig
    produces = "model"
    needs = ("model",)


