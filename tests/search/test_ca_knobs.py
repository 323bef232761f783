"""Cellular automaton semantics, features in [0, 1], and the spread of the cheap knobs."""

from __future__ import annotations

import numpy as np
import pytest

from coral.search.ca import CAFeatures, features, features_many, features_of, run, run_many
from coral.config import CAConfig, KnobRanges, Range
from coral.search.genome import CASeed, Genome, HeavyGenes, random_ca
from coral.search.knobs import (_CALIBRATION, KNOBS, CheapKnobs, calibration_table, knob_score,
                         knobs_for, knobs_from_features, quantile)


def _seed(rows: list[str], birth, survival, steps) -> CASeed:
    cells = tuple(int(c) for row in rows for c in row)
    return CASeed(width=len(rows[0]), height=len(rows), cells=cells, birth=tuple(birth),
                  survival=tuple(survival), steps=steps)


def _life_step_reference(grid: np.ndarray, birth, survival) -> np.ndarray:
    """Plain-loop outer-totalistic step on a torus: the definition, cell by cell."""
    h, w = grid.shape
    out = np.zeros_like(grid)
    for y in range(h):
        for x in range(w):
            n = sum(grid[(y + dy) % h, (x + dx) % w]
                    for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx)
            out[y, x] = (n in survival) if grid[y, x] else (n in birth)
    return out


def test_blinker_oscillates_with_period_two_under_life():
    rows = ["000000", "000000", "011100", "000000", "000000", "000000"]
    hist = run(_seed(rows, birth=(3,), survival=(2, 3), steps=4))
    assert hist.shape == (5, 6, 6)
    assert (hist[0] == hist[2]).all() and (hist[0] != hist[1]).any()
    assert hist[1][1:4, 2].tolist() == [1, 1, 1]          # vertical phase
    f = features(hist)
    assert f.periodicity == pytest.approx(0.5 * (0.5 + 1.0))   # exact period 2, full recurrence


def test_glider_wraps_around_the_torus():
    rows = ["01000", "00100", "11100", "00000", "00000"]
    seed = _seed(rows, birth=(3,), survival=(2, 3), steps=20)   # 4 steps move it by (1, 1)
    hist = run(seed)
    assert hist[-1].sum() == 5
    assert (hist[-1] == hist[0]).all()                   # 5 diagonal moves = one lap of 5x5


def test_batched_run_matches_cell_by_cell_definition():
    rng = np.random.default_rng(11)
    cfg = CAConfig(width=7, height=5, steps_min=3, steps_max=6)
    seeds = [random_ca(cfg, rng) for _ in range(12)]
    for seed, hist in zip(seeds, run_many(seeds)):
        assert hist.shape == (seed.steps + 1, 5, 7)
        grid = np.array(seed.cells, dtype=np.uint8).reshape(5, 7)
        for t in range(seed.steps):
            grid = _life_step_reference(grid, seed.birth, seed.survival)
            assert (hist[t + 1] == grid).all()
        assert (run(seed) == hist).all()


def test_dead_grid_is_frozen_and_empty():
    seed = CASeed(width=6, height=6, cells=(0,) * 36, birth=(3,), survival=(2, 3), steps=8)
    f = features_of(seed)
    assert f == CAFeatures(complexity=0.0, intensity=0.0, convergence=1.0, periodicity=1.0)


def test_features_lie_in_unit_interval_and_are_spread():
    rng = np.random.default_rng(12)
    feats = features_many([random_ca(CAConfig(), rng) for _ in range(400)])
    for name in ("complexity", "intensity", "convergence", "periodicity"):
        v = np.array([getattr(f, name) for f in feats])
        assert ((v >= 0) & (v <= 1)).all(), name
        assert v.max() - v.min() > 0.6, name                  # not degenerate
        _, counts = np.unique(v, return_counts=True)
        assert counts.max() / len(v) < 0.25, name             # no dominating point mass


def test_each_knob_is_monotone_in_its_score():
    ranges = KnobRanges()
    for knob in KNOBS:
        grid = np.linspace(-0.1, 1.1, 500)
        us = [quantile(knob, s) for s in grid]
        assert all(b >= a for a, b in zip(us, us[1:])), knob
        assert us[0] == 0.0 and us[-1] == 1.0
    low = CAFeatures(0.1, 0.1, 0.1, 0.1)
    high = CAFeatures(0.9, 0.1, 0.1, 0.1)          # only complexity raised
    k_low, k_high = knobs_from_features(low, ranges), knobs_from_features(high, ranges)
    assert k_high.temperature > k_low.temperature   # temperature increases with complexity


def test_knob_spread_over_1000_seeds():
    """Every knob spans >= 80% of its range and sits at an end for <= 20% of seeds."""
    ranges = KnobRanges()
    rng = np.random.default_rng(0)
    knobs = [knobs_from_features(f, ranges)
             for f in features_many([random_ca(CAConfig(), rng) for _ in range(1000)])]
    for name in KNOBS:
        r = getattr(ranges, name)
        v = np.array([getattr(k, name) for k in knobs], dtype=float)
        assert ((v >= r.low) & (v <= r.high)).all(), name
        assert v.max() - v.min() >= 0.8 * (r.high - r.low), name
        assert np.mean(v == r.low) <= 0.2 and np.mean(v == r.high) <= 0.2, name
    assert all(isinstance(k.top_k, int) and isinstance(k.max_new_tokens, int) for k in knobs)


def test_knobs_follow_configured_ranges():
    ranges = KnobRanges(temperature=Range(0.5, 0.6), top_k=Range(40, 40))
    f = CAFeatures(0.7, 0.3, 0.5, 0.2)
    k = knobs_from_features(f, ranges)
    assert 0.5 <= k.temperature <= 0.6 and k.top_k == 40
    default = knobs_from_features(f, KnobRanges())
    assert default.top_p == k.top_p                 # other knobs unaffected


def test_knobs_for_genome_matches_features_path():
    rng = np.random.default_rng(13)
    ca = random_ca(CAConfig(), rng)
    g = Genome(id="x", heavy=HeavyGenes(8, 16.0, 0.05, ("q_proj",), False), ca=ca)
    k = knobs_for(g, KnobRanges())
    assert isinstance(k, CheapKnobs)
    assert k == knobs_from_features(features_of(ca), KnobRanges())


def test_committed_calibration_table_is_reproducible():
    table = calibration_table()
    for knob in KNOBS:
        assert np.allclose(table[knob], _CALIBRATION[knob], atol=1e-5), knob
    # the scores the table calibrates are in [0, 1]
    assert 0.0 <= knob_score(CAFeatures(1, 1, 1, 1), "top_k") <= 1.0
