"""Intervals for a comparison of search strategies: bootstrap means and paired differences.

A comparison has few replicates (2 to 10 runs per strategy), each a noisy number (held-out
pass@k of the run's final pick). The percentile bootstrap of the mean (Efron & Tibshirani
1993, ch. 13) makes no normality assumption and is what the comparison reports; with so few
values it is optimistic (its coverage is below the nominal 95%: with 2 values the interval is
just the range of the two means' resamples), which `compare.md` says in words.

Replicate r of every strategy shares its sample seeds (common random numbers), so the
strategies are compared by the paired difference a_r - b_r: the noise that replicate r's
seeds put into both arms cancels, and the interval is that of the differences' mean.

Power arithmetic (docs/running.md): to detect a mean paired difference `delta` with a
two-sided 5% test at 80% power when the differences have standard deviation `sd`, about
R = ((z_0.975 + z_0.8) * sd / delta)^2 = 7.85 (sd / delta)^2 replicates are needed.

Everything is a function of its inputs and a seed (a numpy Generator built here), so the
same runs always give the same intervals.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Sequence

import numpy as np

LEVEL = 0.95
RESAMPLES = 10_000
NO_DIFFERENCE = "no detectable difference at this budget"


@dataclass(frozen=True)
class Interval:
    """A mean with its bootstrap confidence interval over `n` values."""

    mean: float
    low: float
    high: float
    n: int

    def contains(self, value: float) -> bool:
        """True when `value` lies in [low, high]."""
        return self.low <= value <= self.high

    def ci(self) -> list[float]:
        """[low, high] as JSON writes it."""
        return [self.low, self.high]


def bootstrap_mean(values: Sequence[float], seed: int = 0, level: float = LEVEL,
                   resamples: int = RESAMPLES) -> Interval:
    """Mean of `values` and its percentile-bootstrap interval at `level`.

    One value (or none) has no spread to resample: its interval is the value itself (nan for
    no values), and callers say that the interval is degenerate.
    """
    x = np.asarray(list(values), dtype=float)
    if x.size == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    mean = float(x.mean())
    if x.size == 1:
        return Interval(mean, mean, mean, 1)
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(resamples, x.size))].mean(axis=1)
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    # Clamp to the observed mean: float rounding of identical resamples must not exclude it.
    return Interval(mean, float(min(low, mean)), float(max(high, mean)), int(x.size))


def paired_difference(a: Sequence[float], b: Sequence[float], seed: int = 0,
                      level: float = LEVEL, resamples: int = RESAMPLES) -> Interval:
    """Mean of a_r - b_r over replicates r, with its bootstrap interval (pairs resampled)."""
    a, b = list(a), list(b)
    if len(a) != len(b):
        raise ValueError(f"paired values need equal lengths, got {len(a)} and {len(b)}")
    return bootstrap_mean([x - y for x, y in zip(a, b)], seed, level, resamples)


def verdict(diff: Interval, first: str, second: str) -> str:
    """Honest words for a paired difference `first - second`."""
    if diff.n < 2:
        return (f"{first} - {second}: one replicate only, no interval; "
                "run more replicates before reading anything into it")
    if diff.contains(0.0):
        return f"{first} - {second}: the 95% interval spans 0: {NO_DIFFERENCE}"
    better = first if diff.mean > 0 else second
    return (f"{first} - {second}: the 95% interval excludes 0: {better} is better at this "
            f"budget (by {abs(diff.mean):.3f}, interval [{diff.low:.3f}, {diff.high:.3f}])")


def replicates_needed(delta: float, sd: float, level: float = LEVEL,
                      power: float = 0.8) -> int:
    """Replicates for a two-sided paired test to detect mean difference `delta` (normal
    approximation): ((z_{1-alpha/2} + z_power) * sd / delta)^2, rounded up, at least 2."""
    if delta <= 0:
        raise ValueError(f"delta must be > 0, got {delta}")
    z = NormalDist().inv_cdf
    n = ((z(1 - (1 - level) / 2) + z(power)) * sd / delta) ** 2
    return max(2, math.ceil(n))
