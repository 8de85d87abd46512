"""How well a restructured model reproduces the original, on calibration data.

Per replaced layer (a "probe" path present in both models):
- `local`: the new module is fed exactly the input the old module saw in the original model, so
  the error is the layer's own, not accumulated from earlier replacements;
- `inline`: both whole models run and the outputs at the path are compared (for a replacement whose
  input changes meaning, like a classifier head behind a new pooling layer).
The error is relative: ||new - old|| / ||old|| over all calibration outputs of the layer.
For the whole model: the relative error of the logits and the top-1 agreement with the original.
Work is streamed in batches, so memory stays at one batch of activations per probe.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..models.edits import Edit


def probes_of(edit: Edit) -> list[tuple[str, str]]:
    """The edit's own probe list, or every replaced/shared path compared locally."""
    if "probes" in edit.summary:
        return [(p, mode) for p, mode in edit.summary["probes"]]
    return [(op["path"], "local") for op in edit.ops]


class _Errors:
    def __init__(self) -> None:
        self.diff: dict[str, float] = {}
        self.norm: dict[str, float] = {}

    def add(self, path: str, new: torch.Tensor, old: torch.Tensor) -> None:
        self.diff[path] = self.diff.get(path, 0.0) + float((new.double() - old.double()).pow(2).sum())
        self.norm[path] = self.norm.get(path, 0.0) + float(old.double().pow(2).sum())

    def relative(self, path: str) -> float | None:
        if path not in self.norm:
            return None  # never reached by the forward pass
        return (self.diff[path] / self.norm[path]) ** 0.5 if self.norm[path] > 0 else (0.0 if self.diff[path] == 0 else float("inf"))


def _capture_outputs(model: nn.Module, paths: list[str]) -> tuple[dict[str, torch.Tensor], list]:
    seen: dict[str, torch.Tensor] = {}
    handles = []
    for path in paths:
        def hook(_m, _a, out, path=path):
            seen[path] = out.detach().clone()
        handles.append(model.get_submodule(path).register_forward_hook(hook))
    return seen, handles


@torch.no_grad()
def reconstruction(before: nn.Module, after: nn.Module, probes: list[tuple[str, str]], inputs: torch.Tensor,
                   batch_size: int = 32) -> dict[str, Any]:
    """Per-probe relative errors, their mean/max, the logits' relative error and top-1 agreement."""
    before.eval()
    after.eval()
    local = [p for p, mode in probes if mode == "local"]
    inline = [p for p, mode in probes if mode == "inline"]
    errors = _Errors()
    logits = _Errors()
    agree = total = 0
    for start in range(0, len(inputs), batch_size):
        x = inputs[start : start + batch_size]
        # Inputs and outputs of the old modules at the local probes, from the original model.
        old_in: dict[str, torch.Tensor] = {}
        handles = []
        for path in dict.fromkeys(local):
            def pre(_m, args, path=path, old_in=old_in):
                old_in[path] = args[0].detach().clone()
            handles.append(before.get_submodule(path).register_forward_pre_hook(pre))
        old_out, more = _capture_outputs(before, local + inline)
        handles += more
        try:
            ref = before(x)
        finally:
            for h in handles:
                h.remove()
        new_out, handles = _capture_outputs(after, inline)
        try:
            got = after(x)
        finally:
            for h in handles:
                h.remove()
        for path in dict.fromkeys(local):
            if path in old_in:
                errors.add(path, after.get_submodule(path)(old_in[path]), old_out[path])
        for path in inline:
            if path in new_out:
                errors.add(path, new_out[path], old_out[path])
        logits.add("logits", got, ref)
        agree += int((got.argmax(1) == ref.argmax(1)).sum())
        total += len(x)
    layers = {p: errors.relative(p) for p, _ in probes}
    values = [v for v in layers.values() if v is not None]
    return {
        "layers": {p: (round(v, 6) if v is not None else None) for p, v in layers.items()},
        "mean": round(sum(values) / len(values), 6) if values else None,
        "max": round(max(values), 6) if values else None,
        "logits_rel_error": round(logits.relative("logits") or 0.0, 6),
        "top1_agreement": round(agree / total, 6) if total else None,
        "samples": total,
    }
