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
from typing import Callable, Collection, Mapping, Sequence


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
         run: Callable[[Mapping[str, int]], None],
         score: Callable[[str], float]) -> dict[str, int]:
    """Evaluate genomes round by round; return the samples per problem each one got.

    `run(want)` evaluates genome id -> samples per problem (the ones it already has are not
    re-run); `score(id)` ranks a genome on what it has so far (higher is better, ties go to
    the earlier id). `exact` genomes get one sample and no more. After each round the best
    ceil(keep x racing genomes) go on to the next.
    """
    got = {i: (1 if i in exact else rounds[0]) for i in ids}
    run(dict(got))
    alive = [i for i in ids if i not in exact]
    position = {i: p for p, i in enumerate(ids)}
    for n in rounds[1:]:
        alive = sorted(alive, key=lambda i: (-score(i), position[i]))
        alive = alive[: max(1, math.ceil(len(alive) * keep))]
        if not alive:
            break
        want = {i: n for i in alive}
        run(want)
        got.update(want)
    return got
