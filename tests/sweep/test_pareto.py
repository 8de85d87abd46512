"""Pareto fronts and the best variant under limits, on known numbers."""

from __future__ import annotations

from edge_pipeline.sweep.pareto import Limits, Point, best, front

POINTS = [
    Point("a", 0.95, 2.0, 9000),
    Point("b", 0.90, 1.0, 4000),
    Point("c", 0.89, 1.5, 3000),  # slower and worse than b: off the latency front; smallest: on the size front
    Point("d", 0.95, 2.5, 9500),  # as accurate as a, slower: dominated
    Point("e", 0.80, 0.5, 5000),
    Point("f", 0.99, None, 8000),  # not measured: on no latency front; on the size front
    Point("g", 0.99, 0.1, 100, ok=False),  # failed: never compared
]


def test_latency_front_is_the_non_dominated_set_cheapest_first():
    assert front(POINTS, "median_ms") == ["e", "b", "a"]


def test_size_front_uses_file_size():
    assert front(POINTS, "size_bytes") == ["c", "b", "f"]


def test_equal_points_are_both_on_the_front():
    twins = [Point("x", 0.9, 1.0, 1), Point("y", 0.9, 1.0, 1), Point("z", 0.8, 2.0, 1)]
    assert front(twins, "median_ms") == ["x", "y"]


def test_best_without_limits_is_the_most_accurate_measured_or_not():
    winner, reason = best(POINTS, "host", Limits())
    assert winner == "f"
    assert reason.startswith("f on host: the most accurate of 6 variants with no limits set (99.00%")


def test_latency_budget_on_its_device_only():
    limits = Limits(max_latency_ms=1.2, latency_device="pi4")
    winner, reason = best(POINTS, "pi4", limits)
    assert winner == "b"
    assert "within latency <= 1.2 ms" in reason
    # The more accurate variants that the budget excluded are named with why.
    assert "more accurate but out: f (99.00%, latency not measured); a (95.00%, 2 ms > 1.2 ms); d (95.00%, 2.5 ms > 1.2 ms)" in reason
    assert best(POINTS, "host", limits)[0] == "f"  # no budget on another device


def test_ties_on_accuracy_go_to_the_faster_then_smaller():
    winner, reason = best([Point("a", 0.9, 2.0, 10), Point("b", 0.9, 1.0, 20), Point("c", 0.9, 1.0, 15)], "host", Limits())
    assert winner == "c" and "ties with b, a on accuracy" in reason


def test_accuracy_and_size_limits():
    limits = Limits(min_accuracy=0.9, max_size_kb=7)  # KB of 1024 bytes, as the reports show sizes
    winner, reason = best(POINTS, "host", limits)
    assert winner == "b"
    assert "accuracy >= 90%, size <= 7 KB" in reason
    assert "f (99.00%, 7.8 KB > 7 KB); a (95.00%, 8.8 KB > 7 KB)" in reason


def test_no_variant_within_the_limits_says_why_for_each():
    winner, reason = best(POINTS, "host", Limits(min_accuracy=0.999))
    assert winner is None
    assert reason.startswith("no variant on host within accuracy >= 99.9%")
    assert "g: failed or nothing to ship" in reason or "accuracy 99.00% < 99.9%" in reason
