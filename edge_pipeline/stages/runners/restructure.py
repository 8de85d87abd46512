"""Running the `restructure` stage (imported only when it runs; see `restructure.py` for its config)."""

from __future__ import annotations

import copy
import fnmatch
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ...compress.batchnorm import refresh_statistics
from ...compress.decompose import decompose
from ...compress.depthwise import depthwise_separable
from ...compress.factorize import factorize
from ...compress.gap_head import gap_head
from ...compress.grouped import grouped_pointwise
from ...compress.low_rank import low_rank
from ...compress.reconstruction import probes_of, reconstruction
from ...compress.select import Selection
from ...compress.share import share
from ...data import calibration_batch
from ...errors import UserError
from ...models.counting import count_macs, count_params
from ...models.edits import Edit
from ...ui import console
from ..context import StageResult
from ..restructure import (
    DecomposeConfig,
    DepthwiseSeparableConfig,
    FactorizeConfig,
    GapHeadConfig,
    GroupedPointwiseConfig,
    LowRankConfig,
    SelectionConfig,
    ShareConfig,
)


def _selection(cfg: SelectionConfig) -> Selection:
    return Selection(cfg.include, cfg.exclude, cfg.min_channels, cfg.skip_first, cfg.skip_classifier)


def _depthwise(module, cfg: DepthwiseSeparableConfig, inputs, input_shape):
    return depthwise_separable(module, _selection(cfg), cfg.block_activation(), cfg.init, cfg.inverted_residual,
                               cfg.expansion, cfg.residual, inputs)


def _grouped(module, cfg: GroupedPointwiseConfig, inputs, input_shape):
    return grouped_pointwise(module, _selection(cfg), cfg.groups, cfg.init)


def _factorize(module, cfg: FactorizeConfig, inputs, input_shape):
    return factorize(module, _selection(cfg), cfg.rank, cfg.energy, cfg.activation, cfg.init, cfg.only_if_smaller, inputs)


def _decompose(module, cfg: DecomposeConfig, inputs, input_shape):
    return decompose(module, _selection(cfg), cfg.mid_ratio, cfg.activation, cfg.init, cfg.only_if_smaller, inputs)


def _low_rank(module, cfg: LowRankConfig, inputs, input_shape):
    return low_rank(module, _selection(cfg), cfg.rank, cfg.energy, tuple(cfg.layers), cfg.init, cfg.only_if_smaller)


def _gap_head(module, cfg: GapHeadConfig, inputs, input_shape):
    return gap_head(module, _selection(cfg), input_shape, cfg.init, inputs)


def _share(module, cfg: ShareConfig, inputs, input_shape):
    return share(module, _selection(cfg), cfg.init)


# (module, config, calibration inputs NCHW, input shape) -> Edit; mutates the module in place.
APPLY: dict[str, Callable[..., Edit]] = {
    "depthwise_separable": _depthwise,
    "grouped_pointwise": _grouped,
    "factorize": _factorize,
    "decompose": _decompose,
    "low_rank": _low_rank,
    "gap_head": _gap_head,
    "share": _share,
}


def run(stage, ctx):
    model = ctx.load_model()
    module = model.module.eval()
    inputs = calibration_batch(ctx.data, stage.config.calibration_samples, ctx.seed)
    details: dict[str, Any] = {"order": list(stage.config.order), "calibration_samples": len(inputs), "transforms": {}}
    for name, cfg in stage.config.transforms():
        where = f"stages[{ctx.spec.index}].restructure.{name}"
        _check_globs(module, cfg, where)
        try:
            edit, facts = apply_transform(module, name, cfg, inputs, ctx.data.input_shape, ctx.seed, stage.config.refresh_bn)
        except ValueError as exc:
            raise UserError(f"{where}: {exc}") from None
        if edit.ops:
            model.edits.append(edit)
            rec = facts["reconstruction"]
            console.print(
                f"  {name}: replaced {len(edit.ops)} layer(s); params {facts['params_before']:,} -> {facts['params_after']:,}; "
                f"MACs {facts['macs_before']:,} -> {facts['macs_after']:,}; layer error {rec['mean']:.3g} (mean), "
                f"top-1 agreement {rec['top1_agreement']:.3f}"
            )
        else:
            reasons = "; ".join(f"{s['path']}: {s['reason']}" for s in edit.summary.get("skipped", [])[:3])
            console.print(f"  [yellow]![/] {name}: no layer to replace in this model{' (' + reasons + ')' if reasons else ''}")
        details["transforms"][name] = {**facts, "edit": edit.summary}
    return StageResult(model, details=details)


def apply_transform(module, name: str, cfg: SelectionConfig, inputs, input_shape, seed: int = 0,
                    refresh_bn: bool = True) -> tuple[Any, dict[str, Any]]:
    """Run one transform on `module` in place and measure it: (Edit, facts for details.json).

    Facts: layers replaced, params and MACs before/after, and the reconstruction on `inputs`
    (per-layer relative errors, logits error, top-1 agreement with the model before). A lossy
    transform (any layer error > 1e-4) is followed by a BatchNorm statistics refresh on `inputs`
    when `refresh_bn` (see `compress/batchnorm.refresh_statistics`); the agreement before that
    refresh is kept under `before_bn_refresh`.
    """



    module.eval()
    before = copy.deepcopy(module)
    torch.manual_seed(seed)  # `random` init (and seeded fits) reproducible
    edit = APPLY[name](module, cfg, inputs, input_shape)
    module.eval()
    facts: dict[str, Any] = {
        "replaced": len(edit.ops),
        "params_before": count_params(before), "params_after": count_params(module),
        "macs_before": count_macs(before, input_shape), "macs_after": count_macs(module, input_shape),
    }
    if edit.ops:
        probes = probes_of(edit)
        rec = reconstruction(before, module, probes, inputs)
        lossy = [p for p, e in rec["layers"].items() if e is None or e > 1e-4]
        if refresh_bn and lossy:
            inserted = [] if getattr(cfg, "init", None) == "random" else [
                m for op in edit.ops if op["op"] == "replace"
                for m in module.get_submodule(op["path"]).modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
            ]
            refreshed = refresh_statistics(module, [module.get_submodule(p) for p in lossy], inserted, inputs)
            if refreshed:
                first = {k: rec[k] for k in ("logits_rel_error", "top1_agreement")}
                rec = reconstruction(before, module, probes, inputs)
                rec["bn_refreshed"] = refreshed
                rec["before_bn_refresh"] = first
        facts["reconstruction"] = rec
    return edit, facts


def _check_globs(module, cfg: SelectionConfig, where: str) -> None:
    """An `include` glob that matches no module name is a typo, not an empty selection."""
    names = [n for n, _ in module.named_modules() if n]
    for glob in cfg.include:
        if glob != "*" and not any(fnmatch.fnmatchcase(n, glob) for n in names):
            raise UserError(f"{where}.include: {glob!r} matches no module in the model (e.g. {', '.join(names[:4])})")
