"""Running the `prune` stage (imported only when it runs; see `prune.py` for its config)."""

from __future__ import annotations

import math

import torch
from torch import nn

from ... import distributed
from ...compress.pruning import Target, magnitude_prune, prune_channels
from ...compress.pruning.unstructured import keep_zeros, masks_from_edits
from ...data import calibration_batch, stratified_indices
from ...errors import UserError
from ...models.counting import count_macs, count_params
from ...models.edits import replay
from ...models.store import load_state
from ...training import cross_entropy, fit
from ...ui import console
from ..context import StageResult
from ..prune import PruneConfig
from .prune_latency import LatencyPlan
from .train import bn_regularizer


def target_of(cfg: PruneConfig) -> Target:
    """The pruning engine's target for the one of ratio / target_macs / target_params the recipe gives
    (a latency target's value is resolved to milliseconds by `_latency_round`)."""
    if cfg.target_latency is not None:
        return Target("latency", cfg.target_latency)
    if cfg.target_latency_ms is not None:
        return Target("latency", cfg.target_latency_ms)
    if cfg.ratio is not None:
        return Target("ratio", cfg.ratio)
    if cfg.target_macs is not None:
        return Target("macs", cfg.target_macs)
    assert cfg.target_params is not None  # PruneConfig requires exactly one of the three
    return Target("params", cfg.target_params)


def run(stage, ctx):
    model = ctx.load_model()
    cfg = stage.config
    for name in cfg.ignore:
        try:
            model.module.get_submodule(name)
        except AttributeError:
            raise UserError(f"stages[{ctx.spec.index}].prune.ignore: no module named {name!r} in the model") from None
    shape = ctx.data.input_shape
    base = {"macs": count_macs(model.module, shape), "params": count_params(model.module)}
    widths = _widths(model.module)
    latency = LatencyPlan.for_stage(stage, ctx, model.module) if distributed.is_leader() and cfg.method != "magnitude" else None
    rounds = []
    for step in range(1, cfg.steps + 1):
        edit = None
        if distributed.is_leader():
            edit = _prune_round(stage, ctx, model, step, base, widths, latency)
        if distributed.active():  # every rank continues from the leader's decision
            edit = _follow_leader(model, edit)
        model.edits.append(edit)
        info = {"step": step, "macs": count_macs(model.module, shape), "params": count_params(model.module)}
        if cfg.finetune.epochs:
            info["history"] = _finetune(stage, ctx, model, step)
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
        kind = "latency_ms" if cfg.target_latency_ms is not None else target_of(cfg).kind
        details["target"] = {"kind": kind, "value": target_of(cfg).value}
    if latency is not None:
        details["latency"] = latency.summary(model.module)
        console.print(f"  {latency.describe(details['latency'])}")
    return StageResult(model, details=details)


def _prune_round(stage, ctx, model, step: int, base: dict[str, int], widths: dict[str, int], latency=None):
    cfg = stage.config
    if cfg.method == "magnitude":
        return magnitude_prune(model.module, cfg.sparsity * step / cfg.steps, cfg.scope, cfg.ignore)
    target = target_of(cfg)
    round_to = latency.round_to if latency is not None and cfg.round_to == "auto" else cfg.round_to
    calibration = _calibration(stage, ctx) if cfg.method == "taylor" else None
    example = torch.zeros(ctx.data.input_shape)
    # max_ratio holds against the stage's input model, whatever the number of rounds.
    floors = {path: math.ceil((1.0 - cfg.max_ratio) * n - 1e-9) for path, n in widths.items()}
    if target.kind == "latency":
        assert latency is not None
        return latency.prune_round(model.module, step, cfg.steps, lambda module, goal, layers: prune_channels(
            module, example, goal, cfg.method, cfg.allocation, round_to, cfg.max_ratio, cfg.ignore, ctx.seed + step - 1,
            calibration, floors, latency=layers))
    if target.kind == "ratio":  # the same fraction per round, compounding to `ratio`
        value = 1.0 - (1.0 - target.value) ** (1.0 / cfg.steps)
    else:  # a straight line from the input model's cost to the target, relative to the current model
        final = target.value * base[target.kind]
        wanted = base[target.kind] - (base[target.kind] - final) * step / cfg.steps
        now = count_macs(model.module, ctx.data.input_shape) if target.kind == "macs" else count_params(model.module)
        value = min(wanted / now, 1.0 - 1e-9)
    return prune_channels(model.module, example, Target(target.kind, value), cfg.method, cfg.allocation,
                          round_to, cfg.max_ratio, cfg.ignore, ctx.seed + step - 1, calibration, floors)


def _calibration(stage, ctx):
    """The quantize stage's stratified sample of the train split, with its labels."""
    n = stage.config.calibration_samples
    inputs = calibration_batch(ctx.data, n, ctx.seed)
    labels = torch.as_tensor(ctx.data.train_labels[stratified_indices(ctx.data.train_labels, n, ctx.seed)])
    return inputs, labels


def _follow_leader(model, edit):
    """Rank 0 decides; the others replay its edit and take its weights (bitwise the same model)."""
    edit = distributed.broadcast_object(edit)
    state = distributed.broadcast_object({k: v.cpu() for k, v in model.module.state_dict().items()}
                                         if distributed.is_leader() else None)
    if not distributed.is_leader():
        replay(model.module, [edit])
        load_state(model.module, state)  # a plain dict lost the per-module versions (MNASNet needs them)
    return edit


def _finetune(stage, ctx, model, step: int):
    cfg = stage.config.finetune
    masks = masks_from_edits(model.module, model.edits)
    return fit(model.module, ctx.data, cfg, ctx.seed + step, cross_entropy(cfg.label_smoothing),
               f"{ctx.spec.name} round {step}", regularizer=bn_regularizer(cfg),
               after_step=keep_zeros(masks) if masks else None)


def _widths(module) -> dict[str, int]:
    """Output channels of every conv and linear layer."""
    return {n: m.out_channels if isinstance(m, nn.Conv2d) else m.out_features
            for n, m in module.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}


def _describe(edit) -> str:
    s = edit.summary
    if edit.transform == "magnitude":
        return f"{s['sparsity']:.1%} of {s['weights']} weights are zero"
    classes = s["classes"]
    return f"{classes['removed']} of {classes['prunable']} prunable channel classes removed, {s['resized_modules']} modules resized"
