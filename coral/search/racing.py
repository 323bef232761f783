"""Racing: where a generation's samples go (successive halving, as Hyperband's inner loop,
F-Race and OpenEvolve's evaluation cascade do).

Every genome first gets a few samples per problem; the best share of them (by the score so
far) gets twice as many, and so on up to `search.samples_per_problem`. Genomes that are
clearly bad after one or two samples stop there, and the samples go to the ones whose ranking
is still open. `search.evaluation: fixed` is the one-round schedule (every genome gets the
most samples), so both modes run through `race`.

A genome whose decoding is greedy gives the same text for every seed: one sample per problem
is its exact score in either mode, and it never races.

Sample i of a problem has the same seed for every genome and every round (common random
numbers, coral.run.pipeline.sample_seed), so a later round extends the sequence the earlier
ones drew. pass@k is then computed with the n each genome actually got (Chen et al.'s
estimator is unbiased for any n >= k; the first round has at least k samples).

Pure: the caller supplies how to evaluate (`run`) and how to rank (`score`); nothing here
knows about models or pools, so tests drive it with a synthetic objective.
"""

from __future__ import annotations

import math
from typing import Callable, Collection, Mapping, Optional, Sequence


def schedule(evaluation: str, most: int, first: int = 1, k: int = 1) -> list[int]:
    """Samples per problem after each round: [most] when fixed; racing doubles from
    max(first, k) up to `most`."""
    if evaluation == "fixed":
        return [most]
    if evaluation != "racing":
        raise ValueError(f"unknown evaluation {evaluation!r} (fixed | racing)")
    n = min(most, max(first, k))
    out = [n]
    while n < most:
        n = min(most, 2 * n)
        out.append(n)
    return out


def race(ids: Sequence[str], exact: Collection[str], rounds: Sequence[int], keep: float,
         run: Callable[[Mapping[str, int]], None], score: Callable[[str], float],
         allowance: Optional[int] = None, per_sample: int = 1, reserve: int = 0
         ) -> dict[str, int]:
    """Evaluate genomes round by round; return the samples per problem each one got.

    `run(want)` evaluates genome id -> samples per problem (the ones it already has are not
    re-run); `score(id)` ranks a genome on what it has so far (higher is better, ties go to
    the earlier id). `exact` genomes get one sample and no more. After each round the best
    ceil(keep x racing genomes) go on to the next.

    `allowance` is what the sample budget has left (None: no limit); one more sample per
    problem of one genome costs `per_sample` (the number of problems). The first round's n
    shrinks (never below 1) until every genome fits, later rounds promote in rank order while
    the increment fits, and when less than `reserve` (the cheapest next generation) would be
    left, the rest goes to the best genomes as extra samples: the final candidates get more,
    and every strategy and evaluation ends with the budget spent to within one sample per
    problem, so arms compare at equal samples.
    """
    left = math.inf if allowance is None else allowance
    racing = [i for i in ids if i not in exact]
    first = _affordable(rounds[0], left - per_sample * (len(ids) - len(racing)),
                        per_sample * len(racing))
    got = {i: (1 if i in exact else first) for i in ids}
    left -= per_sample * sum(got.values())
    run(dict(got))
    position = {i: p for p, i in enumerate(ids)}

    def ranked(among: Sequence[str]) -> list[str]:
        return sorted(among, key=lambda i: (-score(i), position[i]))

    alive = racing
    for n in (rounds[1:] if first == rounds[0] else ()):
        want = {}
        for i in ranked(alive)[: max(1, math.ceil(len(alive) * keep))]:
            if per_sample * (n - got[i]) > left:
                break
            want[i], left = n, left - per_sample * (n - got[i])
        if not want:
            break
        run(want)
        got.update(want)
        alive = list(want)
    if racing and left < reserve and left >= per_sample:
        top = ranked(racing)[: max(1, math.ceil(len(racing) * keep))]
        extra = int(left // per_sample)
        want = {i: got[i] + extra // len(top) + (r < extra % len(top))
                for r, i in enumerate(top)}
        want = {i: n for i, n in want.items() if n > got[i]}
        run(want)
        got.update(want)
    return got


def _affordable(most: int, left: float, cost: int) -> int:
    """The largest n <= `most` (at least 1) with n x `cost` within `left`."""
    if cost <= 0 or most * cost <= left:
        return most
    return max(1, min(most, int(left // cost)))
