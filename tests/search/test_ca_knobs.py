"""Cellular automaton semantics, its knob handles, and the usable knob space (both encodings)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from coral.config import CAConfig, KnobRanges, Range
from coral.search.ca import contrasts, run, run_many
from coral.search.genome import KNOBS, CASeed, Genome, HeavyGenes, random_ca
from coral.search.knobs import (_CALIBRATION, CheapKnobs, calibration_table, knobs_for,
                                knobs_from_units, quantile, units_of)

REPO = Path(__file__).resolve().parents[2]


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


def test_contrasts_read_disjoint_halves_and_weight_early_states():
    # 4 chunks of 9 cells (row-major): chunk k's first half (4 cells) vs its second (4 cells).
    cells = [0] * 36
    cells[0:4] = [1, 1, 1, 1]                            # chunk 0: first half full
    cells[13:17] = [1, 1, 1, 1]                          # chunk 1: second half full
    frozen = np.array([np.array(cells).reshape(6, 6)] * 3)
    assert contrasts(frozen, 4).tolist() == [1.0, -1.0, 0.0, 0.0]
    dying = frozen.copy()
    dying[1:] = 0                                        # the rule kills everything at once
    early = contrasts(dying, 4, decay=0.8)
    assert 0.0 < early[0] < 1.0 and early[0] == -early[1] and early[0] > contrasts(dying, 4, 1.0)[0]


def test_knob_space_meets_the_targets_over_1000_genomes():
    """The Done-when numbers of the knob space, from scripts/knob_spread.py's last line."""
    for encoding in ("ca", "direct"):
        out = subprocess.run([sys.executable, "scripts/knob_spread.py", "--json", "--encoding",
                              encoding], cwd=REPO, capture_output=True, text=True, check=True,
                             timeout=300)
        report = json.loads(out.stdout.strip().splitlines()[-1])
        assert report["seeds"] == 1000
        assert report["max_abs_spearman"] <= 0.3, report
        assert report["min_quadrant_fraction"] >= 0.03, report
        assert report["mutation_rank_correlation"] >= 0.8, report
        for name, k in report["knobs"].items():
            assert k["span_fraction"] >= 0.8 and max(k["at_low"], k["at_high"]) <= 0.2, name


def test_quantile_is_monotone_and_covers_the_unit_interval():
    grid = np.linspace(-4, 4, 800)
    us = [quantile(s) for s in grid]
    assert all(b >= a for a, b in zip(us, us[1:]))
    assert us[0] == 0.0 and us[-1] == 1.0


def test_knobs_follow_configured_ranges_and_the_token_margin():
    ranges = KnobRanges(temperature=Range(0.5, 0.6), top_k=Range(40, 40), max_new_tokens=48)
    k = knobs_from_units([0.3] * len(KNOBS), ranges)
    assert 0.5 <= k.temperature <= 0.6 and k.top_k == 40 and k.max_new_tokens == 48
    assert knobs_from_units([0.3] * len(KNOBS), KnobRanges()).top_p == k.top_p
    assert isinstance(knobs_from_units([0.5] * 5, KnobRanges()).top_k, int)


def test_encodings_read_the_ca_or_the_direct_genes():
    rng = np.random.default_rng(13)
    ca = random_ca(CAConfig(), rng)
    g = Genome(id="x", heavy=HeavyGenes(8, 16.0, 0.05, ("q_proj",), False), ca=ca,
               knob_genes=(0.0, 0.25, 0.5, 0.75, 1.0))
    direct = knobs_for(g, KnobRanges(encoding="direct", greedy_fraction=0.0))
    assert isinstance(direct, CheapKnobs)
    assert direct.temperature == KnobRanges().temperature.low
    assert direct.max_new_tokens_factor == KnobRanges().max_new_tokens_factor.high
    via_ca = knobs_for(g, KnobRanges())
    assert via_ca == knobs_from_units(units_of([g], "ca")[0], KnobRanges()) != direct


def test_committed_calibration_table_is_reproducible():
    assert np.allclose(calibration_table(), _CALIBRATION, atol=1e-5)
