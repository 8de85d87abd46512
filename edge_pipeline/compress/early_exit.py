"""Self-distilled early exits: FastBERT (Liu et al. 2020) for CNNs, with BranchyNet (Teerapittayanon
et al. 2016) and Shallow-Deep Networks (Kaya et al. 2019) as the CNN precedents.

Exit branches (an optional 1x1 conv, average pooling to a small map, a Linear: Shallow-Deep Networks
pool to a small map rather than to 1x1, which early, local features need) read the feature map at cut
points of the backbone (see `convert.segments`). Training:
- `self_distillation` (FastBERT, default): the backbone and the final classifier stay frozen (eval
  mode: their BatchNorm statistics do not move) and each branch learns the final classifier's
  temperature-softened predictions (KL, scaled by T^2). No labels: the model teaches itself.
- `joint` (BranchyNet): every exit and the backbone train together on labels (sum of cross-entropies).

Adaptive inference stops at the first exit whose uncertainty is below a threshold: the normalized
entropy of its softmax (FastBERT's "speed") or 1 - its largest probability. `choose_threshold` picks
the fastest threshold (lowest expected MACs: segments and branches run up to the exit) whose
accuracy stays within `max_accuracy_drop` of the final classifier's.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..convert.segments import CutPoint, auto_cuts, named_cuts, split, trace
from ..models.counting import count_macs
from ..models.edits import Edit
from ..models.exit_branches import EXITS_ATTRIBUTE, EarlyExits, ExitBranch, exits_of
from ..models.store import TrackedModel
from .distill import hinton_kd

# `at: auto` leaves out a cut with less than this share of the model's MACs before it: an exit after
# a lone stem convolution (torchvision ResNet's 112x112 stage) is almost never confident, and every
# exit costs its branch and its check on the inputs that pass it.
MIN_AUTO_MACS_FRACTION = 0.05
MEASURES = ("entropy", "max_softmax")


def choose_cuts(module: nn.Module, input_shape: tuple[int, ...], at: str | list[str]) -> list[CutPoint]:
    """The cut points for `at` (`auto` or module names); a ValueError says why none fit."""
    graph_module = trace(module, input_shape)
    if at != "auto":
        return named_cuts(graph_module, list(at))
    cuts = auto_cuts(graph_module)
    total = count_macs(module, input_shape)
    done, kept = 0, []
    x = torch.zeros(input_shape)
    for cut, segment in zip(cuts, split(graph_module, [c.node for c in cuts])):
        done += count_macs(segment, tuple(x.shape))
        with torch.no_grad():
            x = segment.eval()(x)
        if total and done >= MIN_AUTO_MACS_FRACTION * total:
            kept.append(cut)
    if not kept:
        raise ValueError("the model has no place to cut before its last resolution stage (one tensor crossing, at least "
                         f"{MIN_AUTO_MACS_FRACTION:.0%} of its MACs before it); name modules with `at`")
    return kept


def attach_exits(model: TrackedModel, cuts: list[CutPoint], num_classes: int, conv_width: float, pool_size: int,
                 config: dict[str, Any]) -> EarlyExits:
    """Attach one branch per cut to the model (an edit, so the branches survive save and reload): a
    1x1 conv with `conv_width` times the cut's channels (none at 0), pooling to `pool_size` squared, a Linear."""
    if exits_of(model.module) is not None:
        raise ValueError("the model already has exit branches; attach them once (one early_exit stage)")
    exits = EarlyExits([c.node for c in cuts], [
        {"in_channels": c.shape[1], "num_classes": num_classes,
         "conv_channels": max(1, round(conv_width * c.shape[1])) if conv_width else 0,
         "pool_size": min(pool_size, c.shape[2], c.shape[3])} for c in cuts])
    edit = Edit("early_exit", config=config, summary={"cuts": [c.label for c in cuts]})
    edit.attach(model.module, EXITS_ATTRIBUTE, exits)
    model.edits.append(edit)
    return exits


class ExitChain(nn.Module):
    """The model as a chain of segments with an exit branch after each but the last (sharing the
    model's modules). `exits(x)` returns every exit's logits, the final classifier's last.

    With `frozen_backbone`, the segments run without gradients and stay in eval mode whatever
    `train()` says, so training touches the branches only. `forward` returns the first exit's
    logits when the backbone is frozen (what is being learned) and the final logits otherwise, so
    `training.fit`'s accuracy history follows the part that trains."""

    def __init__(self, module: nn.Module, input_shape: tuple[int, ...], frozen_backbone: bool = False) -> None:
        super().__init__()
        exits = exits_of(module)
        if exits is None:
            raise ValueError("the model has no exit branches")
        self.segments = nn.ModuleList(split(trace(module, input_shape), exits.cuts))
        self.branches = exits.branches
        self.frozen_backbone = frozen_backbone
        self.input_shape = tuple(input_shape)

    def train(self, mode: bool = True) -> ExitChain:
        super().train(mode)
        if self.frozen_backbone:
            self.segments.eval()
        return self

    def exits(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs = []
        h = x
        for segment, branch in zip(self.segments, self.branches):
            with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen_backbone):
                h = segment(h)
            # A clone while training: a later in-place op on h must not change what the branch saved for backward.
            outputs.append(branch(h.clone() if self.training and not self.frozen_backbone else h))
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen_backbone):
            outputs.append(self.segments[-1](h))
        return outputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = self.exits(x)
        return outputs[0] if self.frozen_backbone else outputs[-1]

    def segment_macs(self) -> tuple[list[int], list[int]]:
        """(MACs of each segment, MACs of each branch) for one input."""
        segments, branches = [], []
        x = torch.zeros(self.input_shape)
        for k, segment in enumerate(self.segments):
            segments.append(count_macs(segment, tuple(x.shape)))
            with torch.no_grad():
                x = segment.eval()(x)
            if k < len(self.branches):
                branches.append(count_macs(self.branches[k], tuple(x.shape)))
        return segments, branches


def freeze_backbone(module: nn.Module) -> list[nn.Parameter]:
    """Stop gradients for every parameter outside the exit branches; returns them (to unfreeze)."""
    branch_params = {id(p) for p in getattr(module, EXITS_ATTRIBUTE).parameters()}
    frozen = [p for p in module.parameters() if id(p) not in branch_params and p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    return frozen


def self_distillation(temperature: float):
    """`training.fit` loss (FastBERT): each branch matches the final classifier's softened output;
    labels are not used."""

    def loss(chain: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        outputs = chain.exits(x)  # type: ignore[operator]
        teacher = outputs[-1].detach()
        total = sum((hinton_kd(o, teacher, temperature) for o in outputs[:-1]), torch.zeros((), device=x.device))
        return total, outputs[0]

    return loss


def joint_loss(label_smoothing: float = 0.0):
    """`training.fit` loss (BranchyNet): the sum of every exit's cross-entropy, final classifier included."""

    def loss(chain: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        outputs = chain.exits(x)  # type: ignore[operator]
        total = sum((F.cross_entropy(o, y, label_smoothing=label_smoothing) for o in outputs), torch.zeros((), device=x.device))
        return total, outputs[-1]

    return loss


@torch.no_grad()
def exit_logits(chain: ExitChain, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> tuple[np.ndarray, np.ndarray]:
    """(exits, N, classes) logits and the N labels over a loader, in eval mode."""
    was_training = chain.training
    chain.eval()
    outputs: list[list[np.ndarray]] = []
    labels = []
    for x, y in batches:
        for k, logits in enumerate(chain.exits(x)):
            if k == len(outputs):
                outputs.append([])
            outputs[k].append(logits.numpy())
        labels.append(np.asarray(y))
    chain.train(was_training)
    return np.stack([np.concatenate(o) for o in outputs]), np.concatenate(labels)


def uncertainty(logits: np.ndarray, measure: str) -> np.ndarray:
    """Per sample (last axis: classes): normalized entropy in [0, 1], or 1 - the largest probability."""
    z = logits.astype(np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=-1, keepdims=True)
    if measure == "max_softmax":
        return 1.0 - p.max(axis=-1)
    if measure != "entropy":
        raise ValueError(f"unknown uncertainty measure {measure!r}; one of {', '.join(MEASURES)}")
    entropy = -(p * np.log(np.clip(p, 1e-300, None))).sum(axis=-1)
    return entropy / np.log(logits.shape[-1])


def exit_indices(uncertainties: np.ndarray, threshold: float) -> np.ndarray:
    """For each sample, the first exit whose uncertainty is below `threshold`; the final one otherwise."""
    exits = uncertainties.shape[0]
    confident = uncertainties[:-1] < threshold
    first = np.where(confident.any(axis=0), confident.argmax(axis=0), exits - 1)
    return first.astype(np.int64)


def cumulative_costs(segment_macs: list[int], branch_macs: list[int]) -> list[int]:
    """MACs spent by an input that leaves at exit k: the segments and branches up to it; the final exit
    ran every segment and every branch (the worst case)."""
    costs, spent = [], 0
    for k, macs in enumerate(segment_macs):
        spent += macs
        if k < len(branch_macs):
            spent += branch_macs[k]
        costs.append(spent)
    return costs


@dataclass(frozen=True)
class Outcome:
    threshold: float
    accuracy: float
    expected_macs: float
    exit_counts: list[int]

    def to_dict(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "accuracy": round(self.accuracy, 6), "expected_macs": round(self.expected_macs, 1),
                "exit_counts": self.exit_counts}


def outcome(logits: np.ndarray, labels: np.ndarray, measure: str, threshold: float, costs: list[int]) -> Outcome:
    """Accuracy, expected MACs and exit histogram of adaptive inference at one threshold."""
    chosen = exit_indices(uncertainty(logits, measure), threshold)
    predictions = logits.argmax(-1)[chosen, np.arange(logits.shape[1])]
    return Outcome(float(threshold), float((predictions == labels).mean()), float(np.mean(np.asarray(costs)[chosen])),
                   np.bincount(chosen, minlength=logits.shape[0]).astype(int).tolist())


def candidate_thresholds(logits: np.ndarray, measure: str, limit: int = 400) -> list[float]:
    """0 (never exit), and just above each observed uncertainty of the branches (at most `limit` of them)."""
    values = np.unique(np.round(uncertainty(logits[:-1], measure).ravel(), 4))
    if len(values) > limit:
        values = np.unique(np.quantile(values, np.linspace(0, 1, limit)).round(4))
    return [0.0] + [round(float(v) + 1e-4, 4) for v in values]


def choose_threshold(logits: np.ndarray, labels: np.ndarray, measure: str, costs: list[int],
                     max_accuracy_drop: float) -> tuple[Outcome, float]:
    """The fastest threshold (lowest expected MACs, then the more accurate) whose accuracy is at most
    `max_accuracy_drop` below the final classifier's; and that reference accuracy."""
    reference = float((logits[-1].argmax(-1) == labels).mean())
    best: Outcome | None = None
    for t in candidate_thresholds(logits, measure):
        result = outcome(logits, labels, measure, t, costs)
        if result.accuracy < reference - max_accuracy_drop - 1e-12:
            continue
        if best is None or (result.expected_macs, -result.accuracy) < (best.expected_macs, -best.accuracy):
            best = result
    assert best is not None  # threshold 0 never exits: the final classifier's own accuracy qualifies
    return best, reference


def threshold_grid(logits: np.ndarray, measure: str, chosen: float, points: int = 9) -> list[float]:
    """Thresholds for the device sweep: never exit (0), the chosen one, and quantiles of the
    branches' uncertainties up to just above the largest (every input leaves at the first exit)."""
    values = uncertainty(logits[:-1], measure).ravel()
    quantiles = np.quantile(values, np.linspace(0.1, 1.0, points)) + 1e-4 if values.size else np.array([])
    return sorted({0.0, round(float(chosen), 4), *(round(float(q), 4) for q in quantiles)})


@torch.no_grad()
def rescale_branches(chain: ExitChain, reference: ExitChain, x: torch.Tensor, tolerance: float = 1e-3) -> list[dict[str, Any]]:
    """Keep the branches right after a function-preserving rescale of the backbone (cross-layer
    equalization scales channels between two layers, and a cut may fall between them): where the map
    at a cut is the reference map times a positive factor per channel, the branch's first layer
    takes the inverse factors, exactly. Any other change is a ValueError. One record per changed cut."""
    changed = []
    h, r = x, x
    for k, branch in enumerate(chain.branches):
        h, r = chain.segments[k].eval()(h), reference.segments[k].eval()(r)
        scale = float(r.abs().max()) or 1.0
        if float((h - r).abs().max()) <= tolerance * scale:
            continue
        factors = (h * r).sum(dim=(0, 2, 3)) / (r * r).sum(dim=(0, 2, 3)).clamp_min(1e-12)
        residual = float((h - factors.view(1, -1, 1, 1) * r).abs().max())
        if residual > tolerance * scale or not bool((factors > 0).all()):
            raise ValueError(f"the feature map at cut {k + 1} changed beyond a per-channel scale (max difference {residual:.3g})")
        _divide_inputs(cast(ExitBranch, branch), factors)
        changed.append({"cut": k, "min_factor": round(float(factors.min()), 6), "max_factor": round(float(factors.max()), 6)})
    return changed


def _divide_inputs(branch: ExitBranch, factors: torch.Tensor) -> None:
    """Scale the branch's first linear map so that it gives the same output on inputs scaled by `factors`."""
    if branch.conv_channels:
        conv = cast(nn.Conv2d, cast(nn.Sequential, branch.body)[0])
        conv.weight.div_(factors.view(1, -1, 1, 1))
    else:  # pooling (linear) then the Linear over (channel, position): its columns per channel
        weight = branch.fc.weight.view(branch.fc.out_features, len(factors), -1)
        weight.div_(factors.view(1, -1, 1))
