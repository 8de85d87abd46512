"""Which classes to remove to reach a target: per layer group or globally.

Targets (`Target.kind`):
- `ratio`: remove this fraction of output channels (per layer group, or of all channels globally);
- `latency`: at most this many predicted milliseconds (`Problem.latency`, a device's latency model);
  steps are taken where they buy the most predicted milliseconds per unit of importance (below).
- `macs` / `params`: keep at most this fraction of the model's MACs / parameters. Reached
  iteratively: classes are removed step by step, and after every step the exact cost of the model
  that decision would produce is recomputed, until it is at or below the target.

Allocation:
- `per_layer`: every layer group loses the same fraction (for macs/params: the smallest common
  fraction that meets the target, found by bisection), its least important classes first;
- `global`: one ranking of all classes by importance; the least important step anywhere goes next.
  For a latency target the ranking is importance per millisecond saved: a step's summed importance
  divided by the predicted time it saves (a greedy knapsack; NetAdapt takes the same view per layer).
  A step that saves no time (inside one of the kernel's channel tiles) ranks last.
Both respect `round_to` (a group's kept channels stay a multiple) and the per-layer maximum ratio.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np

from ...errors import UserError
from .problem import Group, Problem

TILE_LOOKAHEAD = 64  # how far a latency step may reach for the next count that saves time


@dataclass(frozen=True)
class Target:
    kind: str  # "ratio" | "macs" | "params" | "latency" (value in predicted ms)
    value: float

    def describe(self) -> str:
        if self.kind == "ratio":
            return f"ratio {self.value:g} of channels removed"
        if self.kind == "latency":
            return f"predicted latency at most {self.value:.4g} ms"
        return f"{self.kind} at most {self.value:g} of the unpruned model"


def _order(group: Group, scores: np.ndarray) -> np.ndarray:
    """The group's classes, least important first (ties: lower index first, deterministic)."""
    s = scores[group.classes]
    return group.classes[np.lexsort((group.classes, s))]


def _nearest_keep(group: Group, desired: float) -> int:
    keeps = group.keeps
    i = int(np.searchsorted(keeps, desired))
    near = [int(keeps[j]) for j in (i - 1, i) if 0 <= j < len(keeps)]
    return min(near, key=lambda k: (abs(k - desired), -k))


def _uniform(problem: Problem, orders: list[np.ndarray], fraction: float) -> np.ndarray:
    removed = np.zeros(len(problem.classes), bool)
    for group, order in zip(problem.groups, orders):
        keep = _nearest_keep(group, group.size * (1.0 - fraction))
        removed[order[: group.size - keep]] = True
    return removed


def _reached(problem: Problem, removed: np.ndarray | None, target: Target, cost: dict[str, float] | None = None) -> bool:
    """Whether the model is at or below the target; `removed` is only read when `cost` is not given."""
    if not cost:
        assert removed is not None
        cost = problem.cost(removed)
    if target.kind == "ratio":
        return cost["channels"] <= (1.0 - target.value) * problem.base_channels + 1e-9
    if target.kind == "latency":
        return cost["latency"] <= target.value + 1e-12
    base = problem.base_macs if target.kind == "macs" else problem.base_params
    return cost[target.kind] <= target.value * base + 1e-9


def allocate(problem: Problem, scores: np.ndarray, target: Target, allocation: str) -> np.ndarray:
    """The `removed` mask over problem.classes."""
    orders = [_order(g, scores) for g in problem.groups]
    if allocation == "per_layer":
        if target.kind == "ratio":
            return _uniform(problem, orders, target.value)
        return _per_layer_search(problem, orders, scores, target)
    if allocation == "global":
        return _global(problem, orders, scores, target)
    raise ValueError(f"unknown allocation {allocation!r}")


def _per_layer_search(problem: Problem, orders: list[np.ndarray], scores: np.ndarray, target: Target) -> np.ndarray:
    """The largest common fraction that stays above the target (bisection), then the least
    important single steps on top until the target is met: uniform allocation moves every group at
    once, so without the top-up a small model would overshoot by a whole layer's step."""
    most = _uniform(problem, orders, 1.0)
    if not _reached(problem, most, target):
        _unreachable(problem, most, target)
    low, high = 0.0, 1.0
    for _ in range(40):
        mid = (low + high) / 2
        if _reached(problem, _uniform(problem, orders, mid), target):
            high = mid
        else:
            low = mid
    start = _uniform(problem, orders, low)
    if _reached(problem, start, target):
        return start
    return _greedy(problem, orders, scores, target, start, evenly=True)


def _global(problem: Problem, orders: list[np.ndarray], scores: np.ndarray, target: Target) -> np.ndarray:
    return _greedy(problem, orders, scores, target, np.zeros(len(problem.classes), bool))


def _greedy(problem: Problem, orders: list[np.ndarray], scores: np.ndarray, target: Target,
            removed: np.ndarray, evenly: bool = False) -> np.ndarray:
    """From `removed`, take the least important next step of any group until the target is met
    (`evenly`: the step of the group that has kept the largest fraction, so groups stay even)."""
    removed = removed.copy()
    kept = [g.size - int(removed[g.classes].sum()) for g in problem.groups]
    finite = np.where(np.isfinite(scores), scores, np.inf)
    tracker = problem.tracker()
    tracker.remove(np.flatnonzero(removed))
    per_ms = target.kind == "latency" and not evenly

    def saved_ms(batch: np.ndarray) -> float:
        before = tracker.totals["latency"]
        tracker.remove(batch)
        after = tracker.totals["latency"]
        tracker.restore(batch)
        return before - after

    def next_step(i: int):
        group = problem.groups[i]
        j = int(np.searchsorted(group.keeps, kept[i])) - 1  # the next smaller valid count
        if j < 0:
            return None
        k = int(group.keeps[j])
        batch = orders[i][group.size - kept[i] : group.size - k]
        cost = float(np.mean(finite[batch]))
        if not np.isfinite(cost):
            return None
        if per_ms:
            return _priced_step(i, j, k, batch)
        return ((-kept[i] / group.size, cost) if evenly else (cost,)) + (i, k, batch)

    def _priced_step(i: int, j: int, k: int, batch: np.ndarray):
        """Importance given up per millisecond bought. A step inside one of the kernel's channel
        tiles buys nothing, so the step reaches down to the next count that does buy time (a whole
        tile); steps that buy nothing at all rank last."""
        group = problem.groups[i]
        saved = saved_ms(batch)
        for jj in range(j - 1, max(j - TILE_LOOKAHEAD, -1), -1):
            if saved > 1e-12:
                break
            longer = orders[i][group.size - kept[i] : group.size - int(group.keeps[jj])]
            if not np.all(np.isfinite(finite[longer])):
                break
            if saved_ms(longer) > 1e-12:
                k, batch, saved = int(group.keeps[jj]), longer, saved_ms(longer)
        given_up = float(np.sum(finite[batch]))
        return (saved <= 1e-12, given_up / saved if saved > 1e-12 else given_up, i, k, batch)

    heap = [s for s in (next_step(i) for i in range(len(problem.groups))) if s is not None]
    heapq.heapify(heap)
    while not _reached(problem, removed, target, tracker.totals):
        if not heap:
            _unreachable(problem, removed, target)
        best = heapq.heappop(heap)
        tracker.remove(best[-1])
        if _reached(problem, removed, target, tracker.totals):
            # The step that crosses the target: of every group's next step, take the one that lands
            # closest to it (coarse groups, e.g. a shuffle stage's trunk, would overshoot).
            tracker.restore(best[-1])
            best = _closest_crossing(problem, target, tracker, [best] + heap) or best
            tracker.remove(best[-1])
        *_, i, k, batch = best
        removed[batch] = True
        kept[i] = k
        heap = [s for s in heap if s[-3] != i]
        step = next_step(i)
        if step is not None:
            heap.append(step)
        heapq.heapify(heap)
    return removed


def _closest_crossing(problem: Problem, target: Target, tracker, candidates: list):
    """The candidate step after which the model is at or below the target by the least."""
    metric = "channels" if target.kind == "ratio" else target.kind
    best, best_cost = None, -1.0
    for candidate in candidates:
        tracker.remove(candidate[-1])
        if _reached(problem, None, target, tracker.totals) and tracker.totals[metric] > best_cost:
            best, best_cost = candidate, tracker.totals[metric]
        tracker.restore(candidate[-1])
    return best


def _unreachable(problem: Problem, removed: np.ndarray, target: Target) -> None:
    cost = problem.cost(removed)
    if target.kind == "latency":
        raise UserError(
            f"prune: {target.describe()} is out of reach: removing all it may (max_ratio, round_to, channels that cannot "
            f"be pruned) leaves {cost['latency']:.4g} ms predicted ({cost['latency'] / problem.base_latency:.1%} of the "
            "incoming model); raise max_ratio or relax the target"
        )
    fractions = {
        "macs": cost["macs"] / problem.base_macs if problem.base_macs else 1.0,
        "params": cost["params"] / problem.base_params if problem.base_params else 1.0,
        "channels": 1.0 - problem.removed_fraction(removed, "channels"),
    }
    raise UserError(
        f"prune: {target.describe()} is out of reach: removing all it may (max_ratio, round_to, channels that "
        f"cannot be pruned) keeps {fractions['macs']:.1%} of MACs, {fractions['params']:.1%} of parameters and "
        f"{fractions['channels']:.1%} of channels; raise max_ratio or relax the target"
    )
