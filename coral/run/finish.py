"""After the search: the final pick on the most samples, then the held-out check against the
untuned model and against the pick's own knobs without its adapter.

- `reevaluate`: the best `search.reevaluate_top` survivors get samples_per_problem more
  samples per problem on fresh seeds ("final" stream, never used for selection; greedy ones
  one); each is scored on its search and fresh samples pooled, and the best of those is the
  final pick (best.json). Pooling picks on the most samples any genome got. The untuned
  model at greedy decoding, when the search scored it, is always a candidate, and a tie on
  the primary objective goes to it: a pick has to beat the model the user started with on
  its samples, else that model is handed back (no adapter to pay for, the same text every
  time). Beating it means more than one lucky sample: with `search.pick_confidence` the
  candidate's per-problem advantage (paired by problem, pooled samples) needs a one-sided
  lower confidence bound above 0 (in compare-local one sampled fix of one of 4 train problems
  made an adapter the pick, and it fixed nothing held out where the untuned model fixed one).
- `held_out`: the picks on the held-out problems; beside them, on the same problems and
  seeds, the untuned model at greedy decoding (`untuned_greedy`) and the first pick with the
  same knobs but no adapter (`adapter_gain` = with - without; 0 for a pick that has none).
  The held-out samples are not part of the search's budget (coral.run.budget).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional, Sequence

from coral.judge import fitness
from coral.judge.quixbugs import Problem
from coral.messages import Scores
from coral.run.pipeline import FINAL, HELDOUT, Judged, Key
from coral.objectives import PRIMARY
from coral.search.baselines import role_of, untuned_genomes
from coral.search.genome import Genome, genome_from_dict

UNTUNED_ID = "untuned-greedy"
NO_ADAPTER_SUFFIX = "-no-adapter"


def score_genome(genome_id: str, problems: Sequence[Problem], samples: int, k: int,
                 verdicts: dict[Key, Judged]) -> tuple[Scores, list[Judged]]:
    """A genome's aggregate scores (pass@k for `fixed`, over the n = `samples` it got per
    problem) and its samples in canonical order."""
    mine = [[verdicts[(genome_id, p.name, i)] for i in range(samples)] for p in problems]
    agg = fitness.aggregate([[j.scores for j in per] for per in mine], k)
    return agg, [j for per in mine for j in per]


def _n(engine: Any, genome: Genome) -> int:
    """Samples per problem of a check: one for greedy decoding, else samples_per_problem."""
    return 1 if engine.exact(genome) else engine.cfg.search.samples_per_problem


def reevaluate(engine: Any, strategy: Any) -> list[Genome]:
    """Top survivors scored again on fresh seeds; the picks best first on pooled samples."""
    top = engine.ranked(strategy)[: engine.cfg.search.reevaluate_top]
    by_id = {x.id: x for x, _ in strategy.population}
    genomes = [by_id[r["id"]] for r in top]
    untuned = _untuned_greedy(engine)
    if untuned is not None and untuned.id not in {x.id for x in genomes}:
        genomes.append(untuned)
    k = engine.cfg.search.pass_at_k
    want = {x.id: _n(engine, x) for x in genomes}
    fresh = engine.pipeline.evaluate(genomes, engine.train, want, strategy.generation, FINAL)
    search = _search_verdicts(engine, genomes)
    pooled: dict[str, Scores] = {}
    for genome in genomes:
        rec = engine.genomes[genome.id]
        agg, _ = score_genome(genome.id, engine.train, want[genome.id], k, fresh)
        both = _pooled(genome.id, engine.train, k, (search, rec.samples_per_problem),
                       (fresh, want[genome.id]))
        rec.final, rec.pooled = agg.to_dict(), both.to_dict()
        pooled[genome.id] = both
        engine.events.write("final_scored", id=genome.id, scores=agg.to_dict(),
                            search_scores=rec.scores, pooled_scores=both.to_dict(),
                            samples_per_problem=rec.samples_per_problem + want[genome.id])
    picks = pick_order(genomes, pooled, untuned.id if untuned else None,
                       _clears(engine, untuned, search, fresh, want))
    best = dataclasses.asdict(engine.genomes[picks[0].id])
    engine.rundir.write_json("best.json", dict(best, id=picks[0].id))
    return picks


def pick_order(genomes: Sequence[Genome], pooled: dict[str, Scores],
               untuned: Optional[str],
               clears: Callable[[str], bool] = lambda gid: True) -> list[Genome]:
    """Final candidates best first: pooled primary objective, then the untuned genome on a
    tie, then the pooled display score, then the given (search rank) order; a candidate
    ahead of the untuned genome whose advantage does not `clear` the confidence bound goes
    behind it."""
    def key(x: Genome) -> tuple:
        s = pooled[x.id]
        return (-round(getattr(s, PRIMARY), 9), x.id != untuned, -fitness.display_score(s))
    order = sorted(genomes, key=key)
    ids = [x.id for x in order]
    if untuned in ids:
        ahead = [x for x in order[: ids.index(untuned)] if not clears(x.id)]
        order = [x for x in order if x not in ahead]
        at = [x.id for x in order].index(untuned) + 1
        order[at:at] = ahead
    return order


def advantage_bound(mine: Sequence[float], theirs: Sequence[float], confidence: float) -> float:
    """One-sided lower confidence bound of the mean per-problem difference mine - theirs
    (normal approximation over problems; -inf with fewer than 2 problems)."""
    import statistics

    diffs = [a - b for a, b in zip(mine, theirs)]
    if len(diffs) < 2:
        return float("-inf")
    z = statistics.NormalDist().inv_cdf(confidence) if confidence > 0 else 0.0
    return statistics.fmean(diffs) - z * statistics.stdev(diffs) / len(diffs) ** 0.5


def _clears(engine: Any, untuned: Optional[Genome], search: dict[Key, Judged],
            fresh: dict[Key, Judged], want: dict[str, int]) -> Callable[[str], bool]:
    """Whether a candidate's per-problem pooled pass@k beats the untuned genome's with
    `search.pick_confidence` (always, at 0 or without an untuned genome)."""
    confidence = engine.cfg.search.pick_confidence
    if untuned is None or confidence <= 0:
        return lambda gid: True
    k = engine.cfg.search.pass_at_k

    def per_problem(gid: str) -> list[float]:
        tables = ((search, engine.genomes[gid].samples_per_problem), (fresh, want[gid]))
        return [getattr(_pooled(gid, [p], k, *tables), PRIMARY) for p in engine.train]

    base = per_problem(untuned.id)
    return lambda gid: advantage_bound(per_problem(gid), base, confidence) > 0


def _untuned_greedy(engine: Any) -> Optional[Genome]:
    """The untuned model at greedy decoding as the search scored it (seeded or found)."""
    for rec in engine.genomes.values():
        genome = genome_from_dict(rec.genome)
        if role_of(genome, engine.cfg.search) == "greedy_base":
            return genome
    return None


def _search_verdicts(engine: Any, genomes: Sequence[Genome]) -> dict[Key, Judged]:
    """The search-phase verdicts of these genomes, read back from the events (a survivor
    may come from any generation and any driver of a resumed run)."""
    from coral.run.pipeline import SEARCH, judged_from_event

    ids = {x.id for x in genomes}
    return {(j.genome_id, j.problem, j.sample): j
            for j in (judged_from_event(ev) for ev in engine.rundir.events()
                      if ev["event"] == "candidate_judged" and ev["phase"] == SEARCH
                      and ev["genome_id"] in ids)}


def _pooled(genome_id: str, problems: Sequence[Problem], k: int,
            *tables: tuple[dict[Key, Judged], int]) -> Scores:
    """Scores on the first n samples of each (verdicts, n) table together."""
    per = [[t[(genome_id, p.name, i)].scores for t, n in tables for i in range(n)]
           for p in problems]
    return fitness.aggregate(per, k)


def held_out(engine: Any, genomes: list[Genome]) -> None:
    """Score the final picks on held-out problems (never used for selection), with the
    untuned greedy model and the first pick without its adapter beside them."""
    cfg = engine.cfg
    gen, k = cfg.search.generations, cfg.search.pass_at_k
    untuned = untuned_genomes(cfg.search, [UNTUNED_ID])[0]
    pick = genomes[0]
    bare = None if pick.heavy.no_adapter else dataclasses.replace(
        pick, id=pick.id + NO_ADAPTER_SUFFIX, heavy=dataclasses.replace(pick.heavy, steps=0))
    extra = [untuned] + ([bare] if bare else [])
    want = {x.id: _n(engine, x) for x in (*genomes, *extra)}
    verdicts = evaluate_distinct(engine, [*genomes, *extra], engine.held_out, want, gen,
                                 HELDOUT)
    out = []
    for genome in genomes:
        doc = _held_doc(genome.id, engine, want[genome.id], k, verdicts)
        doc.update(search_scores=engine.genomes[genome.id].scores,
                   final_scores=engine.genomes[genome.id].final,
                   samples_per_problem=want[genome.id])
        out.append(doc)
        engine.events.write("heldout_scored", **doc)
    base = _held_doc(UNTUNED_ID, engine, 1, k, verdicts)
    without = _held_doc(bare.id, engine, want[bare.id], k, verdicts) if bare else None
    gain = _gain(out[0], without)
    engine.events.write("heldout_baselines", untuned_greedy=base, adapter_gain=gain)
    engine.rundir.write_json("heldout.json", {
        "problems": [p.name for p in engine.held_out], "genomes": out,
        "untuned_greedy": base, "adapter_gain": gain})


def evaluate_distinct(engine: Any, genomes: Sequence[Genome], problems: Sequence[Problem],
                      want: dict[str, int], generation: int, phase: str) -> dict[Key, Judged]:
    """`pipeline.evaluate`, running genomes with the same adapter and knobs once: their
    answers are the same texts (every genome draws sample i of a problem with the same seed),
    so the first one's verdicts stand for the others (the untuned model at greedy decoding is
    often the pick itself)."""
    first: dict[tuple, Genome] = {}
    same: dict[str, str] = {}
    for x in genomes:
        sig = (engine.pipeline.adapter_key(x.heavy), engine.pipeline.knobs_of(x), want[x.id])
        same[x.id] = first.setdefault(sig, x).id
    runs = list(first.values())
    verdicts = engine.pipeline.evaluate(runs, problems, {x.id: want[x.id] for x in runs},
                                        generation, phase)
    for gid, rep in same.items():
        if gid != rep:
            verdicts.update({(gid, p, i): dataclasses.replace(j, genome_id=gid)
                             for (r, p, i), j in list(verdicts.items()) if r == rep})
    return verdicts


def _held_doc(genome_id: str, engine: Any, n: int, k: int,
              verdicts: dict[Key, Judged]) -> dict:
    """One genome's held-out result."""
    agg, samples = score_genome(genome_id, engine.held_out, n, k, verdicts)
    return {"id": genome_id, "scores": agg.to_dict(), "display": fitness.display_score(agg),
            "fixed": sorted({j.problem for j in samples if j.scores.fixed >= 1.0})}


def _gain(pick: dict, without: Optional[dict]) -> dict:
    """The pick's held-out pass@k with and without its adapter, at the same knobs."""
    with_ = pick["scores"]["fixed"]
    base = with_ if without is None else without["scores"]["fixed"]
    return {"id": pick["id"], "has_adapter": without is not None, "with_adapter": with_,
            "without_adapter": base, "gain": with_ - base,
            "fixed_with": len(pick["fixed"]),
            "fixed_without": len(pick["fixed"] if without is None else without["fixed"])}
