"""Pareto selection: non-dominated sorting, crowding (no position bias), gates, truncation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from coral.config import GateConfig
from coral.search.selection import (crowding_distance, gate_threshold, non_dominated_sort,
                                    nsga2_order, truncate)


def _dominates(a, b) -> bool:
    return all(x >= y for x, y in zip(a, b)) and any(x > y for x, y in zip(a, b))


def _brute_fronts(points) -> list[list[int]]:
    """Peel fronts by checking every pair directly (the definition)."""
    left = list(range(len(points)))
    fronts = []
    while left:
        front = [i for i in left if not any(_dominates(points[j], points[i]) for j in left)]
        fronts.append(front)
        left = [i for i in left if i not in front]
    return fronts


def test_non_dominated_sort_matches_brute_force_on_random_sets():
    rng = np.random.default_rng(0)
    for trial in range(300):
        n = int(rng.integers(1, 25))
        m = int(rng.integers(1, 6))
        # few distinct levels: many ties and exact duplicates
        levels = int(rng.integers(2, 6))
        points = (rng.integers(0, levels, size=(n, m)) / levels).tolist()
        if trial % 5 == 0 and n > 1:
            points[-1] = list(points[0])                  # a guaranteed duplicate
        assert non_dominated_sort(points) == _brute_fronts(points), points


def test_non_dominated_sort_edge_cases():
    assert non_dominated_sort([]) == []
    assert non_dominated_sort([[0.5, 0.5], [0.5, 0.5]]) == [[0, 1]]   # duplicates share a front
    assert non_dominated_sort([[0, 0], [1, 1], [1, 0]]) == [[1], [2], [0]]


def test_crowding_distance_boundaries_infinite_and_interior_exact():
    points = [[0.0, 1.0], [0.25, 0.75], [0.5, 0.5], [1.0, 0.0]]
    d = crowding_distance(points, [0, 1, 2, 3])
    assert math.isinf(d[0]) and math.isinf(d[3])
    assert d[1] == pytest.approx(2 * (0.5 - 0.0) / 1.0)
    assert d[2] == pytest.approx(2 * (1.0 - 0.25) / 1.0)
    assert np.isinf(crowding_distance(points, [1, 2])).all()
    flat = crowding_distance([[0.3, 0.1], [0.3, 0.2], [0.3, 0.3]], [0, 1, 2])
    assert math.isinf(flat[0]) and math.isinf(flat[2]) and flat[1] == pytest.approx(1.0)
    rng = np.random.default_rng(1)
    for _ in range(50):
        pts = rng.random((10, 3))
        front = list(range(10))
        dist = crowding_distance(pts, front)
        for m in range(3):
            assert math.isinf(dist[int(np.argmax(pts[:, m]))])
            assert math.isinf(dist[int(np.argmin(pts[:, m]))])


def test_nsga2_order_puts_fronts_first_then_spread():
    points = [[0, 0], [1, 0], [0, 1], [0.5, 0.5], [0.6, 0.45], [0.2, 0.2]]
    order = nsga2_order(points)
    assert set(order[:4]) == {1, 2, 3, 4} and order[4:] == [5, 0]
    assert set(order[:2]) == {1, 2}                       # boundary points before interior


def test_crowding_has_no_position_bias_on_a_constant_objective():
    # Every point equal: a sort by a constant objective would make the first and last index
    # "extremes" with infinite distance (the parents, which come first in the pool).
    same = [[0.0, 0.5]] * 6
    assert crowding_distance(same, range(6)).tolist() == [0.0] * 6
    # One constant objective next to a varying one: distances follow the points, not the
    # positions, so reversing the order reverses the distances.
    pts = [[0.0, v] for v in (0.1, 0.4, 0.2, 0.9, 0.6)]
    d = crowding_distance(pts, range(5))
    rev = crowding_distance(pts[::-1], range(5))
    assert d.tolist() == rev[::-1].tolist()
    assert math.isinf(d[0]) and math.isinf(d[3]) and np.isfinite(d[[1, 2, 4]]).all()
    # Ties with an extreme value are extremes too, wherever they sit.
    tied = crowding_distance([[0.2, 1.0], [0.5, 0.0], [0.2, 0.5], [0.9, 0.7]], range(4))
    assert math.isinf(tied[0]) and math.isinf(tied[2])


def test_gate_schedules_run_from_start_to_end_monotonically():
    for schedule in ("sigmoid", "linear", "sqrt"):
        gate = GateConfig(schedule=schedule, start=0.1, end=0.7)
        values = [gate_threshold(gate, g, 10) for g in range(10)]
        assert values[0] == pytest.approx(0.1) and values[-1] == pytest.approx(0.7)
        assert all(b >= a for a, b in zip(values, values[1:]))
    assert gate_threshold(GateConfig(schedule="linear", start=0.2, end=0.4), 0, 1) == 0.4


def test_truncate_keeps_gate_passers_first_and_never_shrinks():
    points = [[0.0, 1.0], [0.0, 0.9], [0.1, 0.0], [0.0, 0.8], [0.2, 0.1]]
    gated = [[p[0]] for p in points]            # the gate is on the first objective
    keep = truncate(points, gated, [0.0], 3)
    assert keep[:2] == [4, 2] and len(keep) == 3   # both passers (above 0), best first
    assert keep[2] == 0                            # then the best of the rest
    assert truncate(points, gated, [0.5], 4) == [4, 2, 0, 1]   # nobody passes: still 4
    assert sorted(truncate(points, [[] for _ in points], [], 5)) == [0, 1, 2, 3, 4]
