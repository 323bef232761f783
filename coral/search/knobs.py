"""Cheap knobs: sampling settings from a genome's cellular automaton (or its direct genes).

`knobs.encoding: ca` (the design): each knob reads its own handle of the CA run
(`coral.search.ca.contrasts`: the density contrast between the two halves of a disjoint chunk
of cells, weighted toward the first states), standardised by the binomial spread expected of
the seed's own density, then passed through the empirical CDF of that score over random seeds
(`_CALIBRATION`, computed offline by `calibration_table` and committed) and mapped linearly
into the knob's configured range. Disjoint chunks make the knobs independent handles: over
1,000 random genomes |Spearman r| <= 0.1 between any two knobs, and a one-cell CA mutation
keeps knob ranks correlated about 0.89 (scripts/knob_spread.py). The earlier mapping from
global features (complexity, intensity, ...) moved all knobs together (r 0.65-0.93).

`knobs.encoding: direct`: the genome's `knob_genes` (one real in [0, 1] per knob) are the
quantiles themselves, mapped into the same ranges: the plain encoding to measure the CA
against.

The token budget knob is relative to the problem: `max_new_tokens_factor` (searched) times the
buggy function's token count plus `knobs.max_new_tokens` (fixed), see
coral.model.sampling.token_budget.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from coral.config import CAConfig, KnobRanges, Range
from coral.messages import CheapKnobs
from coral.search.ca import contrasts_many
from coral.search.genome import KNOBS, CASeed, Genome, random_ca


INT_KNOBS = ("top_k",)
# Quantiles of the untuned model's two decodings: every knob in the middle of its range, and
# greedy (temperature quantile 0) with the middle token budget.
DEFAULT_UNITS = (0.5,) * len(KNOBS)
GREEDY_UNITS = (0.0,) + (0.5,) * (len(KNOBS) - 1)

# Probability levels of the calibration quantiles.
CALIBRATION_LEVELS = tuple(i / 40 for i in range(41))
CALIBRATION_SEED = 20240601
CALIBRATION_SEEDS = 4000

# Quantiles at CALIBRATION_LEVELS of the standardised contrast (`handle_scores`), pooled over
# the knobs' handles of CALIBRATION_SEEDS random seeds of the default CAConfig
# (`python scripts/knob_spread.py --calibrate` prints this table).
_CALIBRATION: tuple[float, ...] = (
    -2.915345, -0.803005, -0.645883, -0.547015, -0.475818, -0.420091, -0.375405, -0.336095,
    -0.301721, -0.268297, -0.238631, -0.211728, -0.185547, -0.161418, -0.135770, -0.112095,
    -0.090784, -0.067738, -0.044256, -0.023542, -0.001170, 0.019335, 0.039037, 0.061130,
    0.083053, 0.108579, 0.133642, 0.157129, 0.181753, 0.208692, 0.236914, 0.268145,
    0.299000, 0.334805, 0.378696, 0.422267, 0.478158, 0.547510, 0.646023, 0.813903,
    2.263734,
)


def handle_scores(seeds: Sequence[CASeed]) -> np.ndarray:
    """Each seed's knob handles, standardised: shape (len(seeds), len(KNOBS)).

    A contrast between two halves of m cells each, at the seed's initial live density p, has
    a spread of about sqrt(2 p (1 - p) / m) when the rule keeps cells as they are; dividing by
    it makes one calibration table fit any grid size and density.
    """
    raw = contrasts_many(seeds, len(KNOBS))
    out = np.empty_like(raw)
    for i, seed in enumerate(seeds):
        p = min(max(sum(seed.cells) / len(seed.cells), 1e-3), 1 - 1e-3)
        half = max(1, len(seed.cells) // len(KNOBS) // 2)
        out[i] = raw[i] / math.sqrt(2 * p * (1 - p) / half)
    return out


def _quantile_map(quantiles: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Strictly increasing (x, u) knots of an empirical CDF given by its quantile table.

    Repeated quantiles (a point mass) collapse to one knot at the mean of their levels, so
    the mass lands mid-way, not at an end.
    """
    xs: list[float] = []
    groups: list[list[float]] = []
    for level, q in zip(CALIBRATION_LEVELS, quantiles):
        if xs and q <= xs[-1]:
            groups[-1].append(level)
        else:
            xs.append(float(q))
            groups.append([level])
    return np.array(xs), np.array([sum(g) / len(g) for g in groups])


_MAP = _quantile_map(_CALIBRATION) if _CALIBRATION else None


def quantile(score: float) -> float:
    """Calibrated rank in [0, 1] of a standardised handle (monotone non-decreasing)."""
    if _MAP is None or len(_MAP[0]) == 1:
        return 0.5
    xs, us = _MAP
    return float(np.interp(score, xs, us))


def _scale(u: float, rng: Range, as_int: bool) -> float | int:
    """Map u in [0, 1] linearly into a range (ints rounded half up, so still monotone)."""
    value = rng.low + u * (rng.high - rng.low)
    if as_int:
        return int(min(rng.high, max(rng.low, math.floor(value + 0.5))))
    return float(min(rng.high, max(rng.low, value)))


def knobs_from_units(units: Sequence[float], ranges: KnobRanges) -> CheapKnobs:
    """Knobs from one quantile in [0, 1] per searched knob (KNOBS order).

    A temperature quantile below `ranges.greedy_fraction` decodes greedily: top_k 1 (the
    sampler's argmax), temperature and top_p 1, no repetition penalty; only the token budget
    still comes from its gene. The linear map of the other quantiles is unchanged, so the
    default knobs (every quantile 0.5) are the middle of every range either way.
    """
    values = {k: _scale(float(u), getattr(ranges, k), k in INT_KNOBS)
              for k, u in zip(KNOBS, units)}
    if float(units[0]) < ranges.greedy_fraction:
        values.update(temperature=1.0, top_p=1.0, top_k=1, repetition_penalty=1.0)
    return CheapKnobs(max_new_tokens=int(ranges.max_new_tokens), **values)


def units_of(genomes: Sequence[Genome], encoding: str) -> np.ndarray:
    """Each genome's knob quantiles in [0, 1], shape (len(genomes), len(KNOBS))."""
    if encoding == "direct":
        return np.array([g.knob_genes for g in genomes], dtype=float).reshape(-1, len(KNOBS))
    scores = handle_scores([g.ca for g in genomes])
    return np.vectorize(quantile)(scores) if len(genomes) else scores


def knobs_for(genome: Genome, ranges: KnobRanges) -> CheapKnobs:
    """A genome's sampling knobs under `ranges.encoding`."""
    return knobs_from_units(units_of([genome], ranges.encoding)[0], ranges)


def calibration_table(cfg: CAConfig = CAConfig(), n: int = CALIBRATION_SEEDS,
                      seed: int = CALIBRATION_SEED) -> tuple[float, ...]:
    """Quantiles of the standardised handles over n random CA seeds (offline; _CALIBRATION)."""
    rng = np.random.default_rng(seed)
    scores = handle_scores([random_ca(cfg, rng) for _ in range(n)]).ravel()
    return tuple(round(float(q), 6) for q in np.quantile(scores, CALIBRATION_LEVELS))
