"""Racing (successive halving) on a synthetic objective, and pass@k with unequal n."""

from __future__ import annotations

import numpy as np
import pytest

from coral.judge import fitness
from coral.messages import Scores
from coral.run.finish import score_genome
from coral.run.pipeline import Judged
from coral.search.racing import race, schedule

# Eight genomes whose answers fix a problem with these probabilities: one clearly better.
RATES = {"g0": 0.1, "g1": 0.15, "g2": 0.1, "g3": 0.8, "g4": 0.05, "g5": 0.2, "g6": 0.1,
         "g7": 0.15}
PROBLEMS = 6


class Synthetic:
    """Bernoulli answers with common random numbers: sample i of problem p draws the same
    uniform for every genome (as sample_seed does), and is drawn once whenever it runs."""

    def __init__(self, seed: int) -> None:
        self.u = np.random.default_rng(seed).random((PROBLEMS, 64))
        self.got: dict[str, int] = {}
        self.spent = 0

    def run(self, want) -> None:
        for gid, n in want.items():
            self.spent += PROBLEMS * max(0, n - self.got.get(gid, 0))
            self.got[gid] = max(n, self.got.get(gid, 0))

    def score(self, gid: str) -> float:
        n = self.got[gid]
        return float((self.u[:, :n] < RATES[gid]).mean())


def _pick(evaluation: str, seed: int) -> tuple[str, int]:
    """The best genome by its own samples, and the samples spent, under one evaluation."""
    s = Synthetic(seed)
    counts = race(list(RATES), set(), schedule(evaluation, 8, 1, 1), 0.5, s.run, s.score)
    assert counts == s.got
    best = max(RATES, key=lambda g: (s.score(g) * 1000 + counts[g], -list(RATES).index(g)))
    return best, s.spent


def test_racing_finds_the_better_genome_with_fewer_samples_than_fixed():
    for seed in range(5):
        raced, raced_cost = _pick("racing", seed)
        fixed, fixed_cost = _pick("fixed", seed)
        assert raced == fixed == "g3"
        # 8 genomes x 6 problems x 8 samples = 384 for fixed; racing gives 1, 2, 4, 8 samples
        # to 8, 4, 2, 1 genomes: (8 + 4x1 + 2x2 + 1x4) x 6 = 120
        assert fixed_cost == 384 and raced_cost == 120 < fixed_cost


def test_racing_gives_the_winner_the_most_samples_and_skips_exact_genomes():
    s = Synthetic(0)
    counts = race(list(RATES), {"g0"}, schedule("racing", 8, 1, 1), 0.5, s.run, s.score)
    assert counts["g0"] == 1                     # greedy: one sample is its exact score
    assert counts["g3"] == 8 == max(counts.values())
    assert sorted(counts.values()) == [1, 1, 1, 1, 2, 2, 4, 8]


@pytest.mark.parametrize("evaluation", ["racing", "fixed"])
@pytest.mark.parametrize("allowance", [48, 102, 150, 384])
def test_an_allowance_is_spent_exactly_and_extra_samples_go_to_the_best(evaluation, allowance):
    """The budget's rest within one generation: never more, and when less than the next
    generation's first round (reserve) would be left, all of it (to the best genomes)."""
    s = Synthetic(0)
    rounds = schedule(evaluation, 8, 1, 1)
    counts = race(list(RATES), set(), rounds, 0.5, s.run, s.score, allowance=allowance,
                  per_sample=PROBLEMS, reserve=len(RATES) * PROBLEMS)
    assert counts == s.got
    assert s.spent == allowance or (s.spent < allowance and allowance - s.spent >= 48)
    if allowance < 384:
        assert s.spent == allowance               # 6 divides every allowance here
    if 48 < allowance < 384:                      # the better genome got the extra samples
        assert max(counts, key=lambda g: (counts[g], -list(RATES).index(g))) == "g3"


def test_fixed_shrinks_its_round_to_what_is_left():
    s = Synthetic(0)
    counts = race(list(RATES), {"g0"}, schedule("fixed", 8), 0.5, s.run, s.score,
                  allowance=6 * (1 + 7 * 3), per_sample=6, reserve=48)
    assert counts["g0"] == 1 and all(counts[g] == 3 for g in RATES if g != "g0")
    assert s.spent == 6 * 22


def test_no_allowance_means_the_whole_schedule():
    s, t = Synthetic(1), Synthetic(1)
    assert (race(list(RATES), set(), schedule("racing", 8), 0.5, s.run, s.score)
            == race(list(RATES), set(), schedule("racing", 8), 0.5, t.run, t.score,
                    allowance=None, per_sample=6, reserve=48))


def test_schedules():
    assert schedule("fixed", 5) == [5]
    assert schedule("racing", 5) == [1, 2, 4, 5]
    assert schedule("racing", 8, first=1, k=3) == [3, 6, 8]   # never fewer samples than k
    assert schedule("racing", 2, first=4) == [2]
    with pytest.raises(ValueError, match="unknown evaluation"):
        schedule("bandit", 4)


def _judged(gid: str, problem: str, i: int, fixed: bool) -> Judged:
    return Judged(gid, problem, i, "OK", 1, 1, Scores(fixed=float(fixed)), "code")


def test_pass_at_k_uses_the_n_each_genome_got():
    """Two genomes with 2 and 6 samples per problem in one verdict table: each pass@k is the
    unbiased estimator with its own n (never the other genome's, never a padded n)."""
    verdicts = {}
    for p in ("a", "b"):
        for i, ok in enumerate([True, False]):
            verdicts[("short", p, i)] = _judged("short", p, i, ok)
        for i, ok in enumerate([True, False, False, True, False, False]):
            verdicts[("long", p, i)] = _judged("long", p, i, ok)
    short, samples = score_genome("short", _problems(), 2, 2, verdicts)
    long, _ = score_genome("long", _problems(), 6, 2, verdicts)
    assert len(samples) == 4
    assert short.fixed == pytest.approx(fitness.pass_at_k(2, 1, 2)) == 1.0
    assert long.fixed == pytest.approx(fitness.pass_at_k(6, 2, 2)) == pytest.approx(1 - 6 / 15)
    one, _ = score_genome("long", _problems(), 1, 1, verdicts)   # racing's first round
    assert one.fixed == 1.0


def _problems():
    class P:
        def __init__(self, name):
            self.name = name
    return [P("a"), P("b")]


def test_the_final_pick_must_beat_the_untuned_model_on_its_samples():
    from coral.run.finish import pick_order
    from coral.search.baselines import untuned_genomes
    from coral.config import SearchConfig

    a, b, base = untuned_genomes(SearchConfig(), ["a", "b"]) + untuned_genomes(
        SearchConfig(), ["base"])[:1]
    tie = {"a": Scores(fixed=0.25, style=1.0), "b": Scores(fixed=0.0, style=1.0),
           "base": Scores(fixed=0.25)}
    # equal on the primary objective: the untuned model, whatever the secondary scores
    assert [g.id for g in pick_order([a, b, base], tie, "base")] == ["base", "a", "b"]
    better = dict(tie, a=Scores(fixed=0.5))
    assert [g.id for g in pick_order([a, b, base], better, "base")] == ["a", "base", "b"]
    # without an untuned candidate: pooled primary, then the display score
    assert [g.id for g in pick_order([b, a], tie, None)] == ["a", "b"]
    # ahead on its samples but not beyond the confidence bound: behind the untuned model
    assert [g.id for g in pick_order([a, b, base], better, "base",
                                     clears=lambda gid: False)] == ["base", "a", "b"]


def test_one_lucky_fix_does_not_clear_the_confidence_bound():
    from coral.run.finish import advantage_bound

    # compare-local, replicate 2: one of 4 train problems fixed by a quarter of the samples
    assert advantage_bound([0.25, 0, 0, 0], [0, 0, 0, 0], 0.95) < 0
    # a consistent advantage over 8 problems clears it; at confidence 0 any mean gain does
    assert advantage_bound([0.5, 0.5, 0.25, 0.5, 0.75, 0.5, 0.25, 0.5], [0] * 8, 0.95) > 0
    assert advantage_bound([0.25, 0, 0, 0], [0, 0, 0, 0], 0.0) > 0
    assert advantage_bound([1.0], [0.0], 0.95) == float("-inf")   # one problem: no bound
