"""Is the knob space usable? Independence, coverage, locality and spread over random genomes.

    python scripts/knob_spread.py [--seeds 1000] [--seed 0] [--encoding ca|direct] [--json]
    python scripts/knob_spread.py --calibrate    # prints coral/search/knobs.py's table

Over `--seeds` random genomes (the default CAConfig and KnobRanges, without the greedy region:
greedy decoding sets top_p, top_k and the repetition penalty together by design, which is not
the independence of the handles measured here):
- max_abs_spearman: the largest |Spearman r| between two knobs (target <= 0.3);
- min_quadrant_fraction: the smallest share of genomes in one quadrant (split at each knob's
  median) of any knob pair (target >= 0.03; 0.25 if independent);
- mutation_rank_correlation: per knob, the Spearman r between parent and child knob values
  when the child's CA has one cell flipped (a one-cell mutation), the smallest over knobs
  (target >= 0.8: the search can take small steps);
- knobs: per knob min, max, span fraction of the range (target >= 0.8) and fraction of genomes
  at each end (target <= 0.2).
The last line printed is one JSON object with these keys (tests/search/test_ca_knobs.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import time

import numpy as np

from coral.config import CAConfig, KnobRanges, SearchConfig
from coral.search.genome import KNOBS, random_genome
from coral.search.knobs import calibration_table, knobs_from_units, units_of


def _ranks(values: np.ndarray) -> np.ndarray:
    """Average ranks (ties share their mean rank), as Spearman's r needs."""
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(len(values))
    for v in np.unique(values):
        tied = values == v
        ranks[tied] = ranks[tied].mean()
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two samples."""
    ra, rb = _ranks(a), _ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return 0.0
    return float(np.corrcoef(ra, rb)[0, 1])


def _flip_one_cell(genome, rng):
    """The genome with one random cell of its CA's initial grid flipped."""
    cells = list(genome.ca.cells)
    i = int(rng.integers(len(cells)))
    cells[i] = 1 - cells[i]
    return dataclasses.replace(genome, ca=dataclasses.replace(genome.ca, cells=tuple(cells)))


def measure(n: int, seed: int, encoding: str = "ca", cfg: CAConfig = CAConfig(),
            ranges: KnobRanges = KnobRanges(greedy_fraction=0.0)) -> dict:
    """The report described in the module docstring."""
    rng = np.random.default_rng(seed)
    search = SearchConfig(ca=cfg)
    genomes = [random_genome(search, rng, f"g{i}") for i in range(n)]
    values = _knob_values(genomes, encoding, ranges)
    if encoding == "ca":
        children = [_flip_one_cell(g, rng) for g in genomes]
    else:  # a one-gene mutation of the direct encoding: one knob gene moved by 0.1
        children = [dataclasses.replace(g, knob_genes=tuple(
            min(1.0, max(0.0, u + (0.1 if j == i % len(KNOBS) else 0.0)))
            for j, u in enumerate(g.knob_genes))) for i, g in enumerate(genomes)]
    child_values = _knob_values(children, encoding, ranges)
    pairs = list(itertools.combinations(range(len(KNOBS)), 2))
    high = values > np.median(values, axis=0)   # which half of each knob a genome is in
    quadrants = [np.mean((high[:, i] == hi_i) & (high[:, j] == hi_j))
                 for i, j in pairs for hi_i in (False, True) for hi_j in (False, True)]
    return {
        "seeds": n, "seed": seed, "encoding": encoding,
        "max_abs_spearman": round(max(abs(spearman(values[:, i], values[:, j]))
                                      for i, j in pairs), 4),
        "min_quadrant_fraction": round(float(min(quadrants)), 4),
        "mutation_rank_correlation": round(min(spearman(values[:, k], child_values[:, k])
                                               for k in range(len(KNOBS))), 4),
        "knobs": {name: _spread(values[:, k], getattr(ranges, name))
                  for k, name in enumerate(KNOBS)},
    }


def _knob_values(genomes, encoding: str, ranges: KnobRanges) -> np.ndarray:
    """(genomes, knobs) array of knob values in their ranges."""
    units = units_of(genomes, encoding)
    return np.array([[getattr(knobs_from_units(u, ranges), name) for name in KNOBS]
                     for u in units], dtype=float)


def _spread(values: np.ndarray, r) -> dict:
    """Min, max, span fraction of the range and fractions at either end."""
    width = r.high - r.low
    return {"low": r.low, "high": r.high, "min": round(float(values.min()), 4),
            "max": round(float(values.max()), 4),
            "span_fraction": round(float((values.max() - values.min()) / width), 4)
            if width else 1.0,
            "at_low": round(float(np.mean(values == r.low)), 4),
            "at_high": round(float(np.mean(values == r.high)), 4),
            "median": round(float(np.median(values)), 4)}


def main() -> None:
    """Print the report (or the calibration table with --calibrate)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--encoding", choices=("ca", "direct"), default="ca")
    parser.add_argument("--json", action="store_true", help="only the JSON line")
    parser.add_argument("--calibrate", action="store_true")
    args = parser.parse_args()
    if args.calibrate:
        print("_CALIBRATION: tuple[float, ...] = (")
        table = calibration_table()
        for i in range(0, len(table), 8):
            print("    " + ", ".join(f"{q:.6f}" for q in table[i:i + 8]) + ",")
        print(")")
        return
    start = time.perf_counter()
    report = measure(args.seeds, args.seed, args.encoding)
    report["seconds"] = round(time.perf_counter() - start, 3)
    if not args.json:
        for name, k in report["knobs"].items():
            print(f"{name:24s} [{k['min']:g}, {k['max']:g}] of [{k['low']:g}, {k['high']:g}]"
                  f"  span {k['span_fraction']:.0%}  ends {k['at_low']:.1%}/{k['at_high']:.1%}")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
