"""Bootstrap intervals and paired differences on data whose answer is known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from coral.run.stats import (NO_DIFFERENCE, bootstrap_mean, paired_difference,
                             replicates_needed, verdict)


def test_interval_matches_the_normal_interval_on_a_large_sample():
    # 400 draws of N(0.3, 0.1): the mean's 95% interval is 0.3 +- 1.96 * 0.1 / 20 ~ +- 0.0098.
    x = np.random.default_rng(1).normal(0.3, 0.1, 400)
    iv = bootstrap_mean(x, seed=0)
    half = 1.96 * x.std(ddof=1) / math.sqrt(x.size)
    assert iv.mean == pytest.approx(x.mean())
    assert iv.low == pytest.approx(x.mean() - half, abs=0.15 * half)
    assert iv.high == pytest.approx(x.mean() + half, abs=0.15 * half)


def test_interval_covers_the_true_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(2)
    hits = sum(bootstrap_mean(rng.normal(0.5, 0.2, 40), seed=i, resamples=2000).contains(0.5)
               for i in range(300))
    assert 0.90 <= hits / 300 <= 0.98  # percentile bootstrap: close to, a bit under, nominal


def test_same_seed_same_interval_and_constant_data_has_no_spread():
    x = [0.1, 0.4, 0.2, 0.3]
    assert bootstrap_mean(x, seed=5) == bootstrap_mean(x, seed=5)
    iv = bootstrap_mean([0.25] * 6)
    assert (iv.mean, iv.low, iv.high) == (0.25, 0.25, 0.25)
    assert bootstrap_mean([0.7]).ci() == [0.7, 0.7]
    assert bootstrap_mean([]).n == 0


def test_pairing_cancels_the_noise_the_replicates_share():
    # Replicate noise (sd 0.2) is shared by both arms; arm a is better by exactly 0.05.
    shared = np.random.default_rng(3).normal(0.4, 0.2, 8)
    a, b = shared + 0.05, shared
    diff = paired_difference(a, b)
    assert diff.mean == pytest.approx(0.05)
    assert diff.low == pytest.approx(0.05) and diff.high == pytest.approx(0.05)
    assert "a is better" in verdict(diff, "a", "b")
    # Unpaired, the two arms' intervals overlap: the same data would show nothing.
    ia, ib = bootstrap_mean(a), bootstrap_mean(b)
    assert ia.low < ib.high


def test_honest_words_when_the_interval_spans_zero():
    diff = paired_difference([0.2, 0.1, 0.3], [0.1, 0.3, 0.2])
    assert diff.contains(0.0)
    assert NO_DIFFERENCE in verdict(diff, "nsga2", "random")
    assert "one replicate" in verdict(paired_difference([0.5], [0.1]), "nsga2", "random")
    with pytest.raises(ValueError):
        paired_difference([0.1, 0.2], [0.1])


def test_replicates_needed_follows_the_normal_arithmetic():
    assert replicates_needed(0.1, 0.1) == 8          # 7.85 rounded up
    assert replicates_needed(0.05, 0.1) == 32        # half the effect: four times the runs
    assert replicates_needed(1.0, 0.01) == 2
