"""Pareto fronts and the best variant under constraints, on plain points.

A point is one variant's shipped file on one device: its test accuracy (higher is better) and a
cost, the measured median latency or the file size (lower is better). A point is on the front if
no other point is at least as good on both and better on one. Points without both figures are
not compared (a failed variant, an unmeasured file).

The best variant on a device is the most accurate one within every limit that applies there
(latency budget on its device, or on every device when none is named; minimum accuracy; maximum
size); ties go to the faster, then the smaller file, then the lower id. The reason names the limits,
the winner's figures and each more accurate variant that a limit excluded, so "why not v1?" is
answered in the same line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Point:
    variant: str
    accuracy: float | None
    median_ms: float | None
    size_bytes: int | None
    ok: bool = True  # the variant ran and has a file to ship on this device


def front(points: list[Point], cost: str) -> list[str]:
    """Ids on the accuracy-vs-`cost` front ("median_ms" or "size_bytes"), cheapest first."""
    usable = [p for p in points if p.ok and p.accuracy is not None and getattr(p, cost) is not None]

    def dominates(a: Point, b: Point) -> bool:
        ca, cb = getattr(a, cost), getattr(b, cost)
        assert a.accuracy is not None and b.accuracy is not None
        return a.accuracy >= b.accuracy and ca <= cb and (a.accuracy > b.accuracy or ca < cb)

    on = [p for p in usable if not any(dominates(q, p) for q in usable if q is not p)]
    return [p.variant for p in sorted(on, key=lambda p: (getattr(p, cost), -(p.accuracy or 0.0), p.variant))]


@dataclass(frozen=True)
class Limits:
    max_latency_ms: float | None = None
    latency_device: str | None = None  # None: the latency budget holds on every device
    min_accuracy: float | None = None
    max_size_kb: float | None = None

    @classmethod
    def of(cls, constraints: dict[str, Any]) -> Limits:
        return cls(constraints.get("max_latency_ms"), constraints.get("device"), constraints.get("min_accuracy"),
                   constraints.get("max_size_kb"))

    def latency_on(self, device: str) -> float | None:
        return self.max_latency_ms if self.latency_device in (None, device) else None

    def describe(self, device: str) -> str:
        parts = []
        if self.latency_on(device) is not None:
            parts.append(f"latency <= {self.latency_on(device):g} ms")
        if self.min_accuracy is not None:
            parts.append(f"accuracy >= {self.min_accuracy * 100:g}%")
        if self.max_size_kb is not None:
            parts.append(f"size <= {self.max_size_kb:g} KB")
        return ", ".join(parts)

    def violation(self, p: Point, device: str) -> str | None:
        """Why `p` is out on `device`, or None if it is within every limit."""
        if not p.ok:
            return "failed or nothing to ship"
        budget = self.latency_on(device)
        if budget is not None:
            if p.median_ms is None:
                return "latency not measured"
            if p.median_ms > budget:
                return f"{p.median_ms:.3g} ms > {budget:g} ms"
        if self.min_accuracy is not None and (p.accuracy is None or p.accuracy < self.min_accuracy):
            return "accuracy unknown" if p.accuracy is None else f"accuracy {p.accuracy * 100:.2f}% < {self.min_accuracy * 100:g}%"
        if self.max_size_kb is not None and (p.size_bytes is None or p.size_bytes / 1024 > self.max_size_kb):
            return "size unknown" if p.size_bytes is None else f"{p.size_bytes / 1024:.1f} KB > {self.max_size_kb:g} KB"
        return None


def _rank(p: Point) -> tuple:
    inf = float("inf")
    return (-(p.accuracy if p.accuracy is not None else -inf), p.median_ms if p.median_ms is not None else inf,
            p.size_bytes if p.size_bytes is not None else inf, p.variant)


def best(points: list[Point], device: str, limits: Limits) -> tuple[str | None, str]:
    """(winning id or None, the reason in one line)."""
    within = sorted((p for p in points if limits.violation(p, device) is None and p.accuracy is not None), key=_rank)
    rules = limits.describe(device)
    scope = f"within {rules}" if rules else "with no limits set"
    if not within:
        out = [f"{p.variant}: {limits.violation(p, device)}" for p in sorted(points, key=_rank) if limits.violation(p, device)]
        return None, f"no variant on {device} {scope}" + (f" ({'; '.join(out[:4])})" if out else "")
    winner = within[0]
    figures = [f"{winner.accuracy * 100:.2f}%" if winner.accuracy is not None else "accuracy unknown"]
    if winner.median_ms is not None:
        figures.append(f"{winner.median_ms:.3g} ms")
    if winner.size_bytes is not None:
        figures.append(f"{winner.size_bytes / 1024:.1f} KB")
    line = (f"{winner.variant} on {device}: the most accurate of {len(within)} variant{'s' if len(within) != 1 else ''} "
            f"{scope} ({', '.join(figures)})")
    tied = [p for p in within[1:] if p.accuracy == winner.accuracy]
    if tied:
        line += f"; ties with {', '.join(p.variant for p in tied)} on accuracy, and is faster or smaller"
    better = [p for p in points if p.ok and p.accuracy is not None and winner.accuracy is not None
              and p.accuracy > winner.accuracy and limits.violation(p, device) is not None]
    if better:
        line += "; more accurate but out: " + "; ".join(f"{p.variant} ({(p.accuracy or 0.0) * 100:.2f}%, "
                                                     f"{limits.violation(p, device)})" for p in sorted(better, key=_rank)[:4])
    return winner.variant, line
