"""The pruning problem as arrays: prunable classes, layer groups, and exact costs of a decision.

A decision is a boolean `removed` mask over the prunable classes. MACs, parameters and channel
counts of the model that decision would produce are computed from the channel graph alone (no
model is modified), exactly as `evaluation.count_macs` / `count_params` would count them, so
targets can be approached step by step cheaply.

A *layer group* is a set of classes that appear together in the outputs of convolution or linear
layers (a plain conv's filters; every conv feeding one residual stream; a shuffle stage's trunk).
Per-layer allocation, `round_to` and the per-layer maximum ratio apply to groups.

A latency target adds one more cost: `Problem.latency` (layer path, kept input channels, kept output
channels) -> predicted milliseconds of that layer's ops, plus `latency_rest` for every op not tied to
one layer; the caller (the prune stage) builds it from a device's latency model.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from torch import nn

from ...models.counting import count_params
from .graph import FIXED, ChannelGraph, UnionFind, Use


@dataclass
class Group:
    index: int
    classes: np.ndarray  # indices into Problem.classes
    producers: list[str]  # paths of the conv/linear layers whose outputs are these classes
    step: int = 1  # kept classes must be a multiple of this (round_to), unless nothing is removed
    max_remove: int = 0  # per-layer maximum ratio (and at least one class kept)
    _keeps: np.ndarray | None = field(default=None, repr=False)

    @property
    def size(self) -> int:
        return len(self.classes)

    def valid_keep(self, keep: int) -> bool:
        return keep == self.size or (keep % self.step == 0 and self.size - keep <= self.max_remove and keep > 0)

    @property
    def keeps(self) -> np.ndarray:
        """Every valid kept-class count, ascending (the last one is `size`: nothing removed)."""
        if self._keeps is None:
            self._keeps = np.array([k for k in range(1, self.size + 1) if self.valid_keep(k)], np.int64)
        return self._keeps


@dataclass
class UseIndex:
    """A Use with every channel mapped to a prunable class index (-1: never removed)."""
    use: Use
    inputs: np.ndarray
    outputs: np.ndarray | None
    bias: bool = False
    affine_params: int = 0  # per-channel parameters of a norm layer
    first: bool = True  # first call of this module (parameters are counted once)

    @property
    def produced(self) -> np.ndarray:
        """`outputs` of a use that has them (a conv or linear layer, the producers)."""
        assert self.outputs is not None, self.use.path
        return self.outputs


@dataclass
class Problem:
    graph: ChannelGraph
    classes: np.ndarray  # class roots, sorted
    uses: list[UseIndex]
    groups: list[Group]
    group_of: np.ndarray  # class index -> group index
    base_params: int
    base_macs: int = 0
    base_channels: int = 0
    tracked_params: int = 0
    latency: LatencyFn | None = None
    latency_rest: float = 0.0  # ms of the ops no layer's channels change
    base_latency: float = 0.0

    def set_latency(self, latency: LatencyFn, rest: float) -> None:
        self.latency, self.latency_rest = latency, rest
        self.base_latency = self.cost(np.zeros(len(self.classes), bool))["latency"]

    # -- costs -------------------------------------------------------------------------------

    @staticmethod
    def _kept(index: np.ndarray, removed: np.ndarray) -> int:
        prunable = index >= 0
        return int((~prunable).sum() + (~removed[index[prunable]]).sum())

    def cost(self, removed: np.ndarray) -> dict[str, float]:
        total: dict[str, float] = {"macs": 0, "params": self.base_params - self.tracked_params, "channels": 0}
        if self.latency is not None:
            total["latency"] = self.latency_rest
        for u in self.uses:
            if u.use.kind in ("conv", "linear", "norm"):
                kout = self._kept(u.outputs, removed) if u.outputs is not None else 0
                for key, value in use_cost(u, self._kept(u.inputs, removed), kout, self.latency).items():
                    total[key] += value
        return total

    def tracker(self) -> CostTracker:
        return CostTracker(self)

    def removed_fraction(self, removed: np.ndarray, metric: str) -> float:
        """1 - cost/base for metric in {macs, params, channels}."""
        base = {"macs": self.base_macs, "params": self.base_params, "channels": self.base_channels}[metric]
        return 1.0 - self.cost(removed)[metric] / base if base else 0.0


def build_problem(graph: ChannelGraph, model: nn.Module, round_to: int | None, max_ratio: float,
                  min_channels: dict[str, int] | None = None) -> Problem:
    roots: dict[int, int] = {}

    def index_of(atoms: np.ndarray) -> np.ndarray:
        out = np.empty(len(atoms), np.int64)
        for i, root in enumerate(graph.classes(atoms)):
            out[i] = -1 if root == FIXED else roots.setdefault(int(root), len(roots))
        return out

    uses, seen = [], set()
    for use in graph.uses:
        module = model.get_submodule(use.path)
        outputs = index_of(use.outputs) if use.outputs is not None else None
        u = UseIndex(use, index_of(use.inputs), outputs, first=use.path not in seen)
        seen.add(use.path)
        if use.kind in ("conv", "linear"):
            u.bias = getattr(module, "bias", None) is not None
        elif use.kind == "norm":
            u.affine_params = 2 if getattr(module, "affine", False) else 0
        uses.append(u)
    order = np.array(sorted(roots, key=roots.__getitem__), dtype=np.int64)
    groups, group_of = _groups(uses, len(order), round_to, max_ratio, min_channels or {})
    problem = Problem(graph, order, uses, groups, group_of, base_params=count_params(model))
    problem.tracked_params = _tracked_params(uses)
    full = problem.cost(np.zeros(len(order), bool))
    problem.base_macs, problem.base_channels = int(full["macs"]), int(full["channels"])
    return problem


LatencyFn = Callable[[str, int, int], float]


def use_cost(u: UseIndex, kin: int, kout: int, latency: LatencyFn | None = None) -> dict[str, float]:
    """MACs (every call), parameters and output channels (first call only) of one layer use with
    `kin` input and `kout` output channels kept, counted like evaluation.count_macs/count_params;
    with `latency`, also the layer's predicted milliseconds (first call: the latency model prices
    every call of a layer together)."""
    use = u.use
    if use.kind == "norm":
        out: dict[str, float] = {"macs": 0, "params": u.affine_params * kin if u.first else 0, "channels": 0}
        if latency is not None:
            out["latency"] = 0.0  # folded into the conv before it
        return out
    if use.kind == "linear":
        per_out = kin
    elif use.groups == len(use.inputs) and use.groups > 1:  # depthwise: one input channel per output
        per_out = 1
    else:  # dense or grouped: the group count stays, each group keeps kin / groups inputs
        per_out = kin // use.groups
    params = kout * per_out * use.kernel + (kout if u.bias else 0)
    out = {"macs": kout * per_out * use.kernel * use.spatial, "params": params if u.first else 0,
           "channels": kout if u.first else 0}
    if latency is not None:
        out["latency"] = latency(use.path, kin, kout) if u.first else 0.0
    return out


def _tracked_params(uses: list[UseIndex]) -> int:
    return int(sum(use_cost(u, len(u.inputs), len(u.outputs) if u.outputs is not None else 0)["params"]
                   for u in uses if u.use.kind in ("conv", "linear", "norm")))


def _groups(uses: list[UseIndex], n: int, round_to: int | None, max_ratio: float,
            min_channels: dict[str, int]) -> tuple[list[Group], np.ndarray]:
    """Union classes that share a producer's output; each connected set is a layer group."""
    classes = UnionFind(n)
    producers = [u for u in uses if u.use.kind in ("conv", "linear") and u.first]
    for u in producers:
        idx = u.produced[u.produced >= 0]
        for a in idx[1:]:
            classes.union(int(idx[0]), int(a))
    members: dict[int, list[int]] = {}
    for c in range(n):
        members.setdefault(classes.find(c), []).append(c)
    group_of = np.full(n, -1, np.int64)
    groups: list[Group] = []
    for cls in members.values():
        g = Group(len(groups), np.array(cls, np.int64), [])
        for c in cls:
            group_of[c] = g.index
        groups.append(g)
    for u in producers:
        idx = u.produced[u.produced >= 0]
        if len(idx):
            groups[group_of[idx[0]]].producers.append(u.use.path)
    for g in groups:
        g.step = _step(g, producers, group_of, round_to)
        g.max_remove = min(g.size - 1, int(math.floor(max_ratio * g.size + 1e-9)))
    for u in producers:  # absolute floors (e.g. max_ratio over several rounds, against the first model)
        floor = min_channels.get(u.use.path)
        idx = u.produced[u.produced >= 0]
        if floor is None or not len(idx):
            continue
        g = groups[group_of[idx[0]]]
        per_class = len(idx) / len(np.unique(idx))
        spare = len(u.produced) - floor
        g.max_remove = max(0, min(g.max_remove, int(math.floor(spare / per_class + 1e-9))))
    return groups, group_of


def _step(group: Group, producers: list[UseIndex], group_of: np.ndarray, round_to: int | None) -> int:
    """Kept classes per step so that every producer's kept channel count stays a multiple of round_to."""
    if not round_to or round_to <= 1:
        return 1
    step = 1
    for u in producers:
        idx = u.produced[u.produced >= 0]
        if not len(idx) or group_of[idx[0]] != group.index:
            continue
        counts = np.unique(np.bincount(idx - idx.min())[np.unique(idx) - idx.min()])
        m = int(counts[0]) if len(counts) == 1 else 1  # uneven multiplicities: best effort on classes
        unit = round_to // math.gcd(round_to, m)
        step = step * unit // math.gcd(step, unit)
    return step


class CostTracker:
    """`Problem.cost` kept up to date while classes are removed one batch at a time (global
    allocation takes thousands of small steps; each only touches the layers of its classes)."""

    def __init__(self, problem: Problem) -> None:
        self.problem = problem
        self.uses = [u for u in problem.uses if u.use.kind in ("conv", "linear", "norm")]
        self.kin = np.array([len(u.inputs) for u in self.uses], np.int64)
        self.kout = np.array([len(u.outputs) if u.outputs is not None else 0 for u in self.uses], np.int64)
        self.touch: dict[int, list[tuple[int, int, int]]] = {}  # class -> (use, side 0=in/1=out, count)
        for i, u in enumerate(self.uses):
            for side, index in ((0, u.inputs), (1, u.outputs)):
                if index is None:
                    continue
                values, counts = np.unique(index[index >= 0], return_counts=True)
                for c, k in zip(values.tolist(), counts.tolist()):
                    self.touch.setdefault(c, []).append((i, side, k))
        self.parts = [self._part(i) for i in range(len(self.uses))]
        self.totals = {key: sum(p[key] for p in self.parts) for key in self.parts[0]} if self.parts else {}
        self.totals["params"] = self.totals.get("params", 0) + problem.base_params - problem.tracked_params
        if problem.latency is not None:
            self.totals["latency"] = self.totals.get("latency", 0.0) + problem.latency_rest

    def _part(self, i: int) -> dict[str, float]:
        return use_cost(self.uses[i], int(self.kin[i]), int(self.kout[i]), self.problem.latency)

    def remove(self, classes: np.ndarray, sign: int = 1) -> None:
        affected = set()
        for c in np.asarray(classes).tolist():
            for i, side, k in self.touch.get(c, ()):
                (self.kin if side == 0 else self.kout)[i] -= sign * k
                affected.add(i)
        for i in affected:
            new = self._part(i)
            for key in self.totals:
                self.totals[key] += new[key] - self.parts[i][key]
            self.parts[i] = new

    def restore(self, classes: np.ndarray) -> None:
        """Undo `remove(classes)` (to try a step without taking it)."""
        self.remove(classes, sign=-1)
