"""Cheap knobs: sampling settings derived from cellular-automaton features.

Each knob is a monotone function of one fixed, non-negative combination of the features
(`KNOB_INPUTS`): the combination's score is passed through its empirical CDF over random
seeds (`_CALIBRATION`, computed offline by `calibration_table` and committed as constants)
and the resulting quantile u in [0, 1] is mapped linearly into the knob's configured range.
Calibrating by rank is what spreads the knobs: raw features are skewed (complexity sits
near 1 for most rules), so a linear map would pin knobs at one end of their range, as the
original system did with top_k (at its maximum for 278 of 300 seeds).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from coral.search.ca import CAFeatures, features_many, features_of
from coral.config import CAConfig, KnobRanges, Range
from coral.search.genome import Genome, random_ca


@dataclass(frozen=True)
class CheapKnobs:
    """Per-request sampling settings, named as in transformers' GenerationConfig.

    The token budget is relative to the problem (coral.model.sampling.token_budget):
    ``max_new_tokens + max_new_tokens_factor x tokens of the buggy function``; with factor 0
    `max_new_tokens` is an absolute limit.
    """

    temperature: float
    top_p: float
    top_k: int
    repetition_penalty: float
    max_new_tokens: int
    max_new_tokens_factor: float = 0.0


KNOBS = ("temperature", "top_p", "top_k", "repetition_penalty", "max_new_tokens")
INT_KNOBS = ("top_k", "max_new_tokens")

# Per knob: weights of (feature, inverted?) summing to 1. Every weight is positive, so each
# score (hence each knob) is monotone in every feature it reads: increasing in a feature,
# or decreasing where the feature is inverted (1 - feature).
KNOB_INPUTS: dict[str, tuple[tuple[str, bool, float], ...]] = {
    # rich, restless dynamics -> more exploratory sampling
    "temperature": (("complexity", False, 0.75), ("convergence", True, 0.25)),
    # dense grids -> wider nucleus
    "top_p": (("intensity", False, 0.75), ("complexity", False, 0.25)),
    # changing grids -> more candidate tokens
    "top_k": (("convergence", True, 0.75), ("intensity", False, 0.25)),
    # periodic, repetitive dynamics -> stronger repetition penalty
    "repetition_penalty": (("periodicity", False, 0.6), ("convergence", False, 0.2),
                           ("intensity", False, 0.2)),
    # dense, aperiodic grids -> longer answers allowed
    "max_new_tokens": (("intensity", False, 0.5), ("periodicity", True, 0.5)),
}

# Probability levels of the calibration quantiles.
CALIBRATION_LEVELS = tuple(i / 40 for i in range(41))
CALIBRATION_SEED = 20240601
CALIBRATION_SEEDS = 4000

# Quantiles of each knob's score at CALIBRATION_LEVELS over CALIBRATION_SEEDS random seeds of
# the default CAConfig (`python scripts/knob_spread.py --calibrate` prints this table).
_CALIBRATION: dict[str, tuple[float, ...]] = {
    "temperature": (
        0.034554, 0.086838, 0.159357, 0.209895, 0.245785, 0.298722, 0.371154, 0.459065,
        0.587728, 0.650999, 0.677207, 0.694794, 0.706977, 0.716960, 0.729779, 0.740961,
        0.751949, 0.761997, 0.773209, 0.781796, 0.790803, 0.799050, 0.806660, 0.813162,
        0.818764, 0.824324, 0.829223, 0.834156, 0.839611, 0.844778, 0.848658, 0.853296,
        0.858051, 0.863161, 0.868883, 0.874233, 0.880911, 0.888300, 0.898266, 0.913989, 0.972405
    ),
    "top_p": (
        0.022032, 0.054983, 0.092966, 0.120106, 0.144030, 0.179599, 0.225569, 0.289985,
        0.347319, 0.376127, 0.394956, 0.410095, 0.423033, 0.435291, 0.446101, 0.458784,
        0.467929, 0.476717, 0.486475, 0.496124, 0.505288, 0.512471, 0.520544, 0.527081,
        0.533594, 0.541440, 0.548679, 0.556388, 0.565190, 0.572970, 0.581016, 0.588532,
        0.596287, 0.605486, 0.616284, 0.627915, 0.640221, 0.654444, 0.671480, 0.697359, 0.774125
    ),
    "top_k": (
        0.003448, 0.008679, 0.013403, 0.017360, 0.021842, 0.031456, 0.047309, 0.092014,
        0.150227, 0.197484, 0.239711, 0.290011, 0.314976, 0.336693, 0.352250, 0.363439,
        0.372946, 0.381587, 0.392582, 0.403708, 0.414641, 0.426613, 0.437156, 0.448698,
        0.460986, 0.474694, 0.484835, 0.496918, 0.506979, 0.517675, 0.527852, 0.539137,
        0.548700, 0.562542, 0.574856, 0.590473, 0.610577, 0.634679, 0.657155, 0.698919, 0.873915
    ),
    "repetition_penalty": (
        0.144954, 0.176461, 0.181670, 0.185516, 0.189373, 0.192045, 0.195158, 0.197711,
        0.200639, 0.203102, 0.205751, 0.208735, 0.211250, 0.214255, 0.217128, 0.220236,
        0.223719, 0.227611, 0.232471, 0.237235, 0.242662, 0.247710, 0.256008, 0.265945,
        0.277141, 0.289072, 0.305695, 0.322805, 0.343702, 0.368547, 0.407930, 0.468941,
        0.545405, 0.673491, 0.805877, 0.809837, 0.812913, 0.815499, 0.819111, 0.826454, 0.985837
    ),
    "max_new_tokens": (
        0.006897, 0.017359, 0.026807, 0.034696, 0.043284, 0.057000, 0.098997, 0.301313,
        0.420018, 0.484651, 0.521323, 0.552358, 0.570463, 0.581058, 0.589330, 0.595996,
        0.601517, 0.606886, 0.613245, 0.617499, 0.622059, 0.627334, 0.632317, 0.638460,
        0.643947, 0.649476, 0.655132, 0.661148, 0.666343, 0.671556, 0.677351, 0.682885,
        0.688375, 0.694497, 0.701526, 0.710225, 0.719238, 0.728493, 0.741546, 0.761216, 0.838850
    ),
}


def knob_score(f: CAFeatures, knob: str) -> float:
    """The fixed feature combination (in [0, 1]) that drives `knob`."""
    total = 0.0
    for name, inverted, weight in KNOB_INPUTS[knob]:
        value = float(getattr(f, name))
        total += weight * ((1.0 - value) if inverted else value)
    return total


def _quantile_map(quantiles: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Strictly increasing (x, u) knots of an empirical CDF given by its quantile table.

    Repeated quantiles (a point mass, e.g. every frozen grid has convergence 1) collapse to
    one knot at the mean of their levels, so the mass lands mid-way, not at an end.
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


_MAPS = {k: _quantile_map(v) for k, v in _CALIBRATION.items()}


def quantile(knob: str, score: float) -> float:
    """Calibrated rank in [0, 1] of a knob score (monotone non-decreasing in the score)."""
    xs, us = _MAPS[knob]
    if len(xs) == 1:
        return 0.5
    return float(np.interp(score, xs, us))


def _scale(u: float, rng: Range, as_int: bool) -> float | int:
    """Map u in [0, 1] linearly into a range (ints rounded half up, so still monotone)."""
    value = rng.low + u * (rng.high - rng.low)
    if as_int:
        return int(min(rng.high, max(rng.low, math.floor(value + 0.5))))
    return float(min(rng.high, max(rng.low, value)))


def knobs_from_features(f: CAFeatures, ranges: KnobRanges) -> CheapKnobs:
    """Sampling knobs of a CA run: each a monotone map of its feature score into its range."""
    values = {k: _scale(quantile(k, knob_score(f, k)), getattr(ranges, k), k in INT_KNOBS)
              for k in KNOBS}
    return CheapKnobs(**values)


def knobs_for(genome: Genome, ranges: KnobRanges) -> CheapKnobs:
    """Run a genome's CA and map its features to knobs."""
    return knobs_from_features(features_of(genome.ca), ranges)


def calibration_table(cfg: CAConfig = CAConfig(), n: int = CALIBRATION_SEEDS,
                      seed: int = CALIBRATION_SEED) -> dict[str, tuple[float, ...]]:
    """Quantiles of each knob score over n random CA seeds (offline; see _CALIBRATION)."""
    rng = np.random.default_rng(seed)
    feats = features_many([random_ca(cfg, rng) for _ in range(n)])
    table = {}
    for knob in KNOBS:
        scores = np.array([knob_score(f, knob) for f in feats])
        qs = np.quantile(scores, CALIBRATION_LEVELS)
        table[knob] = tuple(round(float(q), 6) for q in qs)
    return table
