"""The one way the reports (terminal table, markdown, HTML, compare) write numbers.

Every function takes None for "not known" and returns `DASH`, so callers never branch on it.
Fractions (accuracy, agreement, relative error) are stored as 0..1 and shown as percent.
"""

from __future__ import annotations

DASH = "-"


def pct(fraction: float | None, digits: int = 2) -> str:
    """0.9963 -> '99.63%'."""
    return DASH if fraction is None else f"{fraction * 100:.{digits}f}%"


def points(delta: float | None, digits: int = 2) -> str:
    """A change of a fraction in signed percentage points: 0.0037 -> '+0.37'."""
    return DASH if delta is None else f"{delta * 100:+.{digits}f}"


def ms(value: float | None, digits: int = 3) -> str:
    return DASH if value is None else f"{value:.{digits}f}"


def mb(value: float | None) -> str:
    """Memory already in MB (peak RSS)."""
    return DASH if value is None else f"{value:.1f}"


def size(n: int | None) -> str:
    """A byte count in binary units: 2048 -> '2.0 KB'."""
    if n is None:
        return DASH
    for unit, div in (("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= div:
            return f"{n / div:.1f} {unit}"
    return f"{n} B"


def count(n: int | None) -> str:
    """Parameters, MACs: 1500 -> '1.50k'."""
    if n is None:
        return DASH
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= div:
            return f"{n / div:.2f}{unit}"
    return str(n)


def change(before: int | None, after: int | None) -> str:
    """'27.06k -> 11.91k (0.44x)'."""
    if not before or after is None:
        return DASH
    return f"{count(before)} -> {count(after)} ({after / before:.2f}x)"


def kept(before: int | None, after: int | None) -> str:
    """The fraction of something kept: (8, 4) -> '50%'."""
    return DASH if not before or after is None else f"{after / before:.0%}"


def number(value: float | None, spec: str) -> str:
    """Any other figure with an explicit format spec (cosine '.5f', errors '.2e')."""
    return DASH if value is None else format(value, spec)


def seconds(value: float | None) -> str:
    return DASH if value is None else f"{value:.1f} s"
