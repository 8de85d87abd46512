"""Carry out a pruning decision: slice every coupled layer, record it as replayable data, check it.

Each resized module is rebuilt from its spec with the new channel counts, the kept slices of its
tensors are copied in, and an Edit `replace` op records the spec (plus `share` ops where a module
is used under several paths), so `load_model` rebuilds the same architecture. Two checks follow:
- *exactness*: the channel graph of the pruned model, with every producer emitting the classes it
  kept, must show every consumer exactly the original channels restricted to the kept ones;
- *replay*: replaying the recorded ops on a copy of the unpruned model and loading the pruned
  weights with strict=True must give the same outputs.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ...errors import PipelineError
from ...models.edits import Edit, replay
from ...models.modspec import build_module, module_spec
from .graph import ChannelGraph, UnsupportedGraph
from .problem import Problem


@dataclass
class Resize:
    path: str
    kind: str
    keep_in: np.ndarray
    keep_out: np.ndarray | None
    before: tuple[int, int]


def _kept_positions(index: np.ndarray, removed: np.ndarray) -> np.ndarray:
    keep = np.ones(len(index), bool)
    prunable = index >= 0
    keep[prunable] = ~removed[index[prunable]]
    return np.flatnonzero(keep)


def plan_resizes(problem: Problem, removed: np.ndarray) -> list[Resize]:
    out = []
    for u in problem.uses:
        if not u.first:
            continue
        keep_in = _kept_positions(u.inputs, removed)
        keep_out = _kept_positions(u.outputs, removed) if u.outputs is not None else None
        n_in, n_out = len(u.inputs), len(u.outputs) if u.outputs is not None else 0
        if len(keep_in) == n_in and (keep_out is None or len(keep_out) == n_out):
            continue
        out.append(Resize(u.use.path, u.use.kind, keep_in, keep_out, (n_in, n_out)))
    return out


def _new_module(old: nn.Module, changes: dict) -> nn.Module:
    spec = module_spec(old)
    spec["args"].update(changes)
    return build_module(spec)


def _load_kept(new: nn.Module, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    """Copy a layer's kept weights (and bias, if it has one) into the module rebuilt from its spec."""
    assert isinstance(new, (nn.Conv2d, nn.Linear))
    new.weight.copy_(weight)
    if bias is not None:
        assert new.bias is not None  # rebuilt from the old layer's spec, so it has a bias too
        new.bias.copy_(bias)


@torch.no_grad()
def _resized(module: nn.Module, r: Resize) -> nn.Module:
    keep_in = torch.from_numpy(r.keep_in)
    if r.kind == "conv":
        assert isinstance(module, nn.Conv2d)
        keep_out = torch.from_numpy(r.keep_out)
        cin, g = module.in_channels, module.groups
        if g == cin and g > 1:  # depthwise: one filter slice per input channel
            groups, weight = len(keep_in), module.weight[keep_out]
        elif g > 1:  # grouped: the same positions were kept in every block
            per = cin // g
            local = keep_in[keep_in < per]
            groups, weight = g, module.weight[keep_out][:, local]
        else:
            groups, weight = 1, module.weight[keep_out][:, keep_in]
        new = _new_module(module, {"in_channels": len(keep_in), "out_channels": len(keep_out), "groups": groups})
        _load_kept(new, weight, module.bias[keep_out] if module.bias is not None else None)
        return new
    if r.kind == "linear":
        assert isinstance(module, nn.Linear)
        keep_out = torch.from_numpy(r.keep_out)
        new = _new_module(module, {"in_features": len(keep_in), "out_features": len(keep_out)})
        _load_kept(new, module.weight[keep_out][:, keep_in], module.bias[keep_out] if module.bias is not None else None)
        return new
    if r.kind == "norm":
        new = _new_module(module, {"num_features": len(keep_in)})
        state = {k: (v[keep_in] if v.dim() == 1 and len(v) == r.before[0] else v) for k, v in module.state_dict().items()}
        new.load_state_dict(state)
        return new
    if r.kind == "permute":
        spec = module_spec(module)
        keys = [k for k, v in spec.get("args", {}).items() if v == r.before[0] and isinstance(v, int)]
        if len(keys) != 1:
            raise PipelineError(
                f"prune: cannot rebuild {type(module).__name__} at {r.path} for fewer channels: its spec_args "
                f"{spec.get('args')} has no single channel-count argument"
            )
        return _new_module(module, {keys[0]: len(keep_in)})
    raise AssertionError(r.kind)


def apply_resizes(model: nn.Module, resizes: list[Resize], edit: Edit) -> None:
    paths: dict[int, list[str]] = {}
    for path, module in model.named_modules(remove_duplicate=False):
        if path:
            paths.setdefault(id(module), []).append(path)
    for r in resizes:
        old = model.get_submodule(r.path)
        new = _resized(old, r)
        edit.replace(model, r.path, new)
        for other in paths.get(id(old), []):
            if other != r.path:
                edit.share(model, other, r.path)


def verify_exact(original: ChannelGraph, problem: Problem, removed: np.ndarray, pruned: nn.Module,
                 example: torch.Tensor) -> None:
    """Re-run the channel analysis on the pruned model with producers emitting their kept classes."""
    provided, expected = {}, {}
    for u in problem.uses:
        roots = original.classes(u.use.inputs)
        expected[u.use.node] = roots[_kept_positions(u.inputs, removed)]
        if u.outputs is not None and u.first:
            assert u.use.outputs is not None  # u.outputs indexes them
            provided[u.use.path] = original.classes(u.use.outputs)[_kept_positions(u.outputs, removed)]
    try:
        check = ChannelGraph(pruned, example, provided=provided, reference=original)
    except UnsupportedGraph as exc:
        raise PipelineError(f"prune: the pruned model no longer runs its own data movement ({exc}); "
                            "the model computes channel counts from constants, add the layer to prune.ignore") from None
    problems = list(check.problems)
    for use in check.uses:
        want = expected.get(use.node)
        if want is None:
            continue
        got = original.classes(use.inputs)
        if not np.array_equal(got, want):
            problems.append(f"{use.path} would see other channels than before pruning")
    if problems:
        raise PipelineError(f"prune: the pruned model is not an exact restriction of the original: {problems[0]} "
                            f"({len(problems)} problem(s)); add the layer to prune.ignore")


@torch.no_grad()
def verify_replay(unpruned_copy: nn.Module, pruned: nn.Module, edit: Edit, example: torch.Tensor) -> None:
    rebuilt = replay(unpruned_copy, [edit])
    rebuilt.load_state_dict(pruned.state_dict(), strict=True)
    x = torch.randn_like(example)
    a, b = rebuilt.eval()(x), pruned.eval()(x)
    if not torch.allclose(a, b, rtol=1e-5, atol=1e-6):
        raise PipelineError("prune: replaying the recorded edit does not rebuild the pruned model (internal error)")


def snapshot(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model)


def kept_summary(problem: Problem, removed: np.ndarray, resizes: list[Resize]) -> dict:
    layers = {}
    for r in resizes:
        entry = {"kind": r.kind, "in": [r.before[0], len(r.keep_in)]}
        if r.keep_out is not None:
            entry["out"] = [r.before[1], len(r.keep_out)]
            entry["kept_out"] = r.keep_out.tolist()
        else:
            entry["kept"] = r.keep_in.tolist()
        layers[r.path] = entry
    groups = []
    for g in problem.groups:
        gone = int(removed[g.classes].sum())
        if not gone:
            continue
        root = g.producers[0]
        use = next(u for u in problem.uses if u.first and u.use.path == root)
        assert use.outputs is not None  # a producer
        groups.append({
            "root": root, "channels_before": len(use.outputs), "kept": _kept_positions(use.outputs, removed).tolist(),
            "classes": [g.size, g.size - gone], "coupled": g.producers,
        })
    return {"layers": layers, "groups": groups}

