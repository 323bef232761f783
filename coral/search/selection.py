"""Pareto selection as pure functions: non-dominated sorting, crowding, gates, truncation.

All objectives are maximised. Used by the strategies (coral/search/strategies/) and by the
engine for reports (which genomes are on the first front).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from coral.config import GateConfig

# Steepness of the sigmoid gate schedule (normalised so it still runs start -> end).
_SIGMOID_STEEPNESS = 10.0


def non_dominated_sort(points: Sequence[Sequence[float]]) -> list[list[int]]:
    """Fronts of indices (maximisation), best first; indices ascending within a front."""
    p = np.asarray(points, dtype=float)
    n = len(p)
    if n == 0:
        return []
    ge = (p[:, None, :] >= p[None, :, :]).all(axis=2)
    gt = (p[:, None, :] > p[None, :, :]).any(axis=2)
    dominates = ge & gt                        # dominates[i, j]: i dominates j
    dominated_by = dominates.sum(axis=0)       # how many points dominate j
    fronts: list[list[int]] = []
    current = [j for j in range(n) if dominated_by[j] == 0]
    while current:
        fronts.append(current)
        for i in current:
            dominated_by = dominated_by - dominates[i]
        dominated_by[current] = -1             # removed
        current = [j for j in range(n) if dominated_by[j] == 0]
    return fronts


def crowding_distance(points: Sequence[Sequence[float]], front: Sequence[int]) -> np.ndarray:
    """Crowding distance of each member of `front` (same order).

    Per objective, the two extremes get an infinite distance and the others the normalised gap
    between their neighbours. An objective that is constant over the front says nothing about
    spread and is skipped entirely: giving its "extremes" infinity (as a sort by a constant
    does, picking the first and last index) would favour positions, i.e. the parents.
    """
    p = np.asarray(points, dtype=float)
    idx = list(front)
    dist = np.zeros(len(idx))
    if len(idx) <= 2:
        dist[:] = math.inf
        return dist
    sub = p[idx]
    for m in range(sub.shape[1]):
        order = np.argsort(sub[:, m], kind="stable")
        values = sub[order, m]
        span = values[-1] - values[0]
        if span <= 0:
            continue
        # Every member tied with an extreme value is an extreme (no tie broken by position).
        dist[sub[:, m] == values[0]] = math.inf
        dist[sub[:, m] == values[-1]] = math.inf
        dist[order[1:-1]] += (values[2:] - values[:-2]) / span
    return dist


def rank_and_crowding(points: Sequence[Sequence[float]]) -> tuple[np.ndarray, np.ndarray]:
    """Front rank (0 = best) and crowding distance within its front of every point."""
    n = len(points)
    rank = np.zeros(n, dtype=int)
    crowd = np.zeros(n)
    for r, front in enumerate(non_dominated_sort(points)):
        rank[front] = r
        crowd[front] = crowding_distance(points, front)
    return rank, crowd


def nsga2_order(points: Sequence[Sequence[float]]) -> list[int]:
    """All indices best first: by front rank, then crowding distance (desc), then index."""
    rank, crowd = rank_and_crowding(points)
    return sorted(range(len(points)), key=lambda i: (rank[i], -crowd[i], i))


def gate_threshold(gate: GateConfig, generation: int, generations: int) -> float:
    """The gate's threshold at a generation: start -> end by its schedule over the run."""
    t = 1.0 if generations <= 1 else min(1.0, max(0.0, generation / (generations - 1)))
    if gate.schedule == "linear":
        s = t
    elif gate.schedule == "sqrt":
        s = math.sqrt(t)
    else:  # sigmoid, rescaled so s(0) = 0 and s(1) = 1
        def f(x: float) -> float:
            return 1.0 / (1.0 + math.exp(-_SIGMOID_STEEPNESS * (x - 0.5)))
        s = (f(t) - f(0.0)) / (f(1.0) - f(0.0))
    return gate.start + (gate.end - gate.start) * s


def truncate(points: Sequence[Sequence[float]], gated: Sequence[Sequence[float]],
             thresholds: Sequence[float], size: int) -> list[int]:
    """Indices of the `size` survivors, best first (those passing the gates first, in NSGA-II
    order): elitist NSGA-II truncation behind gates.

    `gated[i]` holds point i's values of the gated objectives, compared with `thresholds`
    (a point passes when every value is above its threshold). Passing points are ranked by
    NSGA-II; if fewer than `size` pass, the rest is filled with the best of the others by
    their gated values (in gate order), then rank and crowding, so the population never
    shrinks.
    """
    passing = [i for i in range(len(points))
               if all(v > t for v, t in zip(gated[i], thresholds))]
    failing = [i for i in range(len(points)) if i not in set(passing)]
    chosen = [passing[j] for j in nsga2_order([points[i] for i in passing])][:size]
    if len(chosen) < size and failing:
        rank, crowd = rank_and_crowding([points[i] for i in failing])
        fill = sorted(range(len(failing)), key=lambda j: (
            tuple(-v for v in gated[failing[j]]), rank[j], -crowd[j], j))
        chosen += [failing[j] for j in fill[: size - len(chosen)]]
    return chosen
