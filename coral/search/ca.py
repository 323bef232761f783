"""Outer-totalistic 2-D cellular automaton on a torus, and four features of a run in [0, 1].

The automaton is the genome's cheap part: its run is summarised by `CAFeatures`, which
`coral.search.knobs` maps to sampling settings. Rules are outer-totalistic with separate tables:
a dead cell with n live Moore neighbours is born iff n is in `birth`; a live cell stays
alive iff n is in `survival`. The grid wraps around (torus).

`run_many` steps many seeds at once (one numpy array per step for the whole batch), so
calibrating or testing over a thousand seeds takes well under a second of stepping.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from coral.search.genome import CASeed

# Lags searched for an exact repeat of the final state (period detection).
MAX_PERIOD = 8
# 2x2 block patterns: 16 possible, entropy normalised by log(16).
_BLOCK_BITS = 16


@dataclass(frozen=True)
class CAFeatures:
    """Summary of one CA run, every field in [0, 1] (see `features` for the formulas)."""

    complexity: float
    intensity: float
    convergence: float
    periodicity: float


def _rule_table(counts: Sequence[int]) -> np.ndarray:
    """Boolean lookup over neighbour counts 0..8."""
    table = np.zeros(9, dtype=bool)
    table[list(counts)] = True
    return table


def _neighbours(grids: np.ndarray) -> np.ndarray:
    """Live Moore-neighbour counts of a batch (N, H, W) of 0/1 grids on a torus."""
    count = np.zeros(grids.shape, dtype=np.uint8)
    for dy in (-1, 0, 1):
        rolled = np.roll(grids, dy, axis=1)
        for dx in (-1, 0, 1):
            if dy or dx:
                count += np.roll(rolled, dx, axis=2)
    return count


def run_many(seeds: Sequence[CASeed]) -> list[np.ndarray]:
    """Run a batch of seeds of equal grid size; history i has shape (steps_i + 1, H, W)."""
    if not seeds:
        return []
    height, width = seeds[0].height, seeds[0].width
    if any(s.height != height or s.width != width for s in seeds):
        raise ValueError("run_many needs seeds of one grid size")
    n = len(seeds)
    longest = max(s.steps for s in seeds)
    grid = np.array([s.cells for s in seeds], dtype=np.uint8).reshape(n, height, width)
    birth = np.stack([_rule_table(s.birth) for s in seeds])        # (N, 9)
    survival = np.stack([_rule_table(s.survival) for s in seeds])  # (N, 9)
    rows = np.arange(n)[:, None, None]
    history = np.empty((longest + 1, n, height, width), dtype=np.uint8)
    history[0] = grid
    for t in range(1, longest + 1):
        count = _neighbours(grid)
        alive = grid.astype(bool)
        # Fancy indexing per batch row picks each seed's own rule for its counts.
        nxt = np.where(alive, survival[rows, count], birth[rows, count])
        grid = nxt.astype(np.uint8)
        history[t] = grid
    return [history[: s.steps + 1, i].copy() for i, s in enumerate(seeds)]


def run(seed: CASeed) -> np.ndarray:
    """Run one seed; returns the history (steps + 1, H, W) of 0/1 grids, initial grid first."""
    return run_many([seed])[0]


def _block_entropy(history: np.ndarray) -> float:
    """Mean over time of the normalised Shannon entropy of 2x2 block patterns (torus)."""
    h = history.astype(np.int64)
    code = (h + 2 * np.roll(h, -1, axis=2) + 4 * np.roll(h, -1, axis=1)
            + 8 * np.roll(np.roll(h, -1, axis=1), -1, axis=2))
    frames = code.reshape(code.shape[0], -1)
    offsets = np.arange(frames.shape[0])[:, None] * _BLOCK_BITS
    counts = np.bincount((frames + offsets).ravel(),
                         minlength=frames.shape[0] * _BLOCK_BITS)
    p = counts.reshape(frames.shape[0], _BLOCK_BITS) / frames.shape[1]
    with np.errstate(divide="ignore", invalid="ignore"):
        ent = -np.where(p > 0, p * np.log(p), 0.0).sum(axis=1)
    return float(np.mean(ent) / np.log(_BLOCK_BITS))


def _late_window(history: np.ndarray) -> np.ndarray:
    """The second half of the run (at least two states): where the dynamics have settled."""
    start = min(history.shape[0] // 2, history.shape[0] - 2)
    return history[max(start, 0):]


def _expected_disagreement(a: np.ndarray, b: np.ndarray) -> float:
    """Hamming fraction expected between two independent grids with the densities of a, b."""
    da, db = float(a.mean()), float(b.mean())
    return da * (1 - db) + db * (1 - da)


def features(history: np.ndarray) -> CAFeatures:
    """Features of a run, each in [0, 1].

    - intensity   = mean live fraction over all states of the run.
    - complexity  = mean over all states of the Shannon entropy of the 16 possible 2x2 block
                    patterns (torus), divided by log 16: 0 for uniform grids, high for rich ones.
    - convergence = 1 - mean Hamming fraction between consecutive states of the late half
                    of the run: 1 = frozen, 0 = every cell flips every step. (Not divided by
                    the change expected of noise: blinking rules exceed it, which would pin
                    half of all seeds at 0.)
    - periodicity = (exact + recur) / 2. exact = 1/p for the smallest lag p <= MAX_PERIOD (and
                    <= steps) with the final state equal to the state p steps before, else 0.
                    recur = max over those lags l of 1 - min(1, d_l / d_ref_l), the final
                    state's normalised Hamming agreement with its past (1 = exact repeat).
    """
    if history.ndim != 3 or history.shape[0] < 2:
        raise ValueError(f"history must be (steps + 1 >= 2, H, W), got {history.shape}")
    cells = history.shape[1] * history.shape[2]
    floor = 1.0 / cells
    intensity = float(history.mean())
    complexity = _block_entropy(history)

    late = _late_window(history)
    convergence = 1.0 - float(np.mean(late[1:] != late[:-1]))

    final = history[-1]
    exact, recur = 0.0, 0.0
    for lag in range(1, min(MAX_PERIOD, history.shape[0] - 1) + 1):
        past = history[-1 - lag]
        d = float(np.mean(final != past))
        if d == 0.0 and exact == 0.0:
            exact = 1.0 / lag
        ref = max(_expected_disagreement(final, past), floor)
        recur = max(recur, 1.0 - min(1.0, d / ref))
    periodicity = 0.5 * (exact + recur)
    return CAFeatures(complexity=_unit(complexity), intensity=_unit(intensity),
                      convergence=_unit(convergence), periodicity=_unit(periodicity))


def _unit(x: float) -> float:
    """Clamp to [0, 1] against rounding (the formulas already lie in it)."""
    return float(min(1.0, max(0.0, x)))


def features_of(seed: CASeed) -> CAFeatures:
    """Run a seed and summarise it."""
    return features(run(seed))


def features_many(seeds: Sequence[CASeed]) -> list[CAFeatures]:
    """Features of many seeds (batched stepping; seeds grouped by grid size)."""
    out: list[CAFeatures | None] = [None] * len(seeds)
    groups: dict[tuple[int, int], list[int]] = {}
    for i, s in enumerate(seeds):
        groups.setdefault((s.height, s.width), []).append(i)
    for idx in groups.values():
        for i, hist in zip(idx, run_many([seeds[i] for i in idx])):
            out[i] = features(hist)
    return out  # type: ignore[return-value]
