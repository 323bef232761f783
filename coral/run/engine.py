"""The driver loop: ask → evaluate (coral.run.pipeline) → score → tell, checkpointed, resumable.

Written against `coral.run.pools.Pools` and the `SearchStrategy` Protocol, so the same code
drives in-process pools (tests, ``coral run --in-process``) and Ray actors
(cluster/ray_pools.py), with any registered strategy. Results arrive in completion order but
are put back in canonical order (genome order of `ask()`, problem order of the dataset,
sample order) before anything that affects the search, so a run is a function of its seed.

Each genome is scored on up to n samples per training problem (`search.samples_per_problem`,
common seeds for every genome); with `search.evaluation: racing` (coral.search.racing) the
samples go to the genomes whose rank is still open, greedy genomes get one (their exact score),
and `fixed` is pass@k over the n each genome got. After the last generation the best survivors
(`search.reevaluate_top`) are re-evaluated on fresh seeds never used for selection and the
final pick is the best of them on all its samples; the held-out check (coral.run.finish) runs
on it, on the same knobs without its adapter, and on the untuned model at greedy decoding.

Resume: checkpoint.json holds the strategy state after the last completed generation; the
interrupted generation is asked again (same genomes: the RNG state is in the checkpoint) and
samples already judged in it are taken from events.jsonl instead of being re-run.
"""

from __future__ import annotations

import dataclasses
import logging
import statistics
import time
from collections import Counter
from dataclasses import dataclass
from typing import Optional, Sequence

from coral.config import Config, ConfigError
from coral.judge import fitness
from coral.judge.quixbugs import Problem, load_problems, select, split
from coral.messages import Scores
from coral.run.budget import exhausted, reserved_gpus, spent
from coral.run.finish import held_out, reevaluate, score_genome
from coral.run.pipeline import SEARCH, Judged, Key, Pipeline, judged_from_event
from coral.run.pools import Pools
from coral.run.progress import Progress
from coral.run.rundir import RunDir, config_differences, relevant_fields
from coral.search.genome import Genome, genome_to_dict
from coral.search.knobs import knobs_for
from coral.search.racing import race, schedule
from coral.search.selection import non_dominated_sort
from coral.search.strategies import SearchStrategy, StateRefused, make_strategy

log = logging.getLogger(__name__)

CHECKPOINT_VERSION = 3
_LIVE_EVERY_S = 2.0  # how often live.json (queue depths for `coral status`) is rewritten
_STAGES = {"AdapterWork": "adapter", "GenerateWork": "generate", "JudgeWork": "judge"}


class ResumeRefused(RuntimeError):
    """The run directory's checkpoint cannot be continued with this config or this CORAL."""


@dataclass
class GenomeRecord:
    """What the run knows about one evaluated genome (saved in the checkpoint)."""

    generation: int
    genome: dict
    key: str
    knobs: dict
    scores: dict             # Scores.to_dict() on the search samples
    display: float
    fixed: list[str]         # problems with at least one fixed sample
    samples: int = 0
    unchanged: int = 0       # samples that handed the buggy function back
    tokens: int = 0          # tokens generated over all samples
    final: Optional[dict] = None  # scores on fresh seeds (final re-evaluation)
    samples_per_problem: int = 0  # n of its pass@k (racing gives genomes different n)
    pooled: Optional[dict] = None  # scores on search + fresh samples (what picks the best)


def problems_for(cfg: Config) -> tuple[tuple[Problem, ...], tuple[Problem, ...]]:
    """(train, held-out) problems of a config: subset, deterministic split, train cap."""
    chosen = select(load_problems(cfg.dataset.quixbugs), cfg.dataset.problems)
    train, held = split(chosen, cfg.dataset.held_out_fraction, cfg.dataset.split_seed)
    if cfg.dataset.max_train_problems:
        train = train[: cfg.dataset.max_train_problems]
    return train, held


class Engine:
    """Runs a whole search in a run directory with the given pools."""

    def __init__(self, cfg: Config, pools: Pools, rundir: RunDir,
                 train: Sequence[Problem], held_out: Sequence[Problem], base_model: str,
                 data_version: str, progress: Optional[Progress] = None) -> None:
        self.cfg, self.pools, self.rundir = cfg, pools, rundir
        self.train, self.held_out = tuple(train), tuple(held_out)
        # Score against the judges' problems: they carry the calibrated reference timings.
        self.problems = {p.name: p for p in (*self.train, *self.held_out)}
        self.problems.update({p.name: p for p in getattr(pools, "problems", ())})
        self.base_model, self.data_version = base_model, data_version
        self.progress = progress or Progress(enabled=False)
        self.events = None
        self.pipeline: Optional[Pipeline] = None
        self.genomes: dict[str, GenomeRecord] = {}
        self.history: list[dict] = []        # generation summaries
        self._last_live = 0.0

    # ------------------------------------------------------------------ whole run
    def run(self, resume: bool = True) -> RunDir:
        """Run (or resume) the search to cfg.search.generations, then the final checks."""
        t_start = time.perf_counter()
        self.rundir.create()
        strategy, known = self._start(resume)
        self.rundir.write_config(self.cfg)
        self.events = self.rundir.open_events()
        self.pipeline = self._pipeline()
        self.events.write("run_started", generation=strategy.generation,
                          resumed=bool(known) or strategy.generation > 0, config=self.cfg.source,
                          train_problems=[p.name for p in self.train],
                          held_out_problems=[p.name for p in self.held_out],
                          base_model=self.base_model, data_version=self.data_version)
        self._check_budget(strategy)
        try:
            while (strategy.generation < self.cfg.search.generations
                   and not self._budget_spent()):
                self._generation(strategy, known)
                known = {}
            self._finish(strategy)
            elapsed = time.perf_counter() - t_start
            wait = self.pipeline.wait_seconds
            self.events.write("run_ended", seconds=round(elapsed, 3),
                              wait_seconds=round(wait, 3), driver_seconds=round(elapsed - wait, 3),
                              generations=strategy.generation, cache=self.pools.cache_stats())
            self.rundir.clear_live()
        finally:
            self.events.close()
            self.progress.close()
        return self.rundir

    def _budget_spent(self) -> bool:
        """Whether `search.budget` is used up (checked at generation boundaries; see
        coral.run.budget), recording why in the events. Samples count as spent when what is
        left cannot pay for the next generation's first round."""
        used = spent(self.rundir.events(), reserved_gpus(self.cfg))
        reason = exhausted(self.cfg.search.budget, used)
        limit = self.cfg.search.budget.samples
        if reason is None and limit and limit - used.samples < self._reserve():
            reason = (f"budget spent: samples {used.samples} of {limit} (the "
                      f"{limit - used.samples} left do not pay for a generation's first "
                      f"round, {self._reserve()})")
        if reason:
            log.info("%s: stopping the search", reason)
            self.events.write("budget_spent", reason=reason)
        return reason is not None

    def _check_budget(self, strategy: SearchStrategy) -> None:
        """A sample budget too small for one generation is a config error, not a run
        without a population."""
        limit = self.cfg.search.budget.samples
        if strategy.generation == 0 and limit and limit < self._reserve():
            raise ConfigError(
                f"{self.cfg.source or 'config'}: search.budget.samples {limit} is less than "
                f"one generation's first round ({self.cfg.search.population_size} genomes x "
                f"{len(self.train)} train problems x pass_at_k {self.cfg.search.pass_at_k} = "
                f"{self._reserve()}); raise it or set 0 for no limit")

    def _reserve(self) -> int:
        """Samples the cheapest generation costs: every genome, one sample per problem each
        (k where pass@k needs them)."""
        return self.cfg.search.population_size * len(self.train) * self.cfg.search.pass_at_k

    def _allowance(self, known: dict[Key, Judged]) -> Optional[int]:
        """Samples this generation may spend (None: no sample limit): the budget less what
        earlier generations spent (`known`: this generation's samples judged before a
        resume, which its race counts again)."""
        limit = self.cfg.search.budget.samples
        if not limit:
            return None
        return limit - (spent(self.rundir.events()).samples - len(known))

    def _pipeline(self) -> Pipeline:
        """The evaluation pipeline over this run's pools, events and progress bars."""
        return Pipeline(self.pools, self.problems, self.cfg.run.seed,
                        lambda heavy: heavy.key(self.base_model, self.data_version),
                        lambda genome: knobs_for(genome, self.cfg.knobs), self.events,
                        self.progress, self.cfg.ray.max_in_flight, self._live)

    def _start(self, resume: bool) -> tuple[SearchStrategy, dict[Key, Judged]]:
        """Fresh strategy, or the checkpoint's plus the interrupted generation's verdicts."""
        ck = self.rundir.load_checkpoint() if resume else None
        strategy = make_strategy(self.cfg.search, self.cfg.run.seed)
        if ck is None:
            self.rundir.clear()
            return strategy, {}
        self._check_resumable(ck)
        try:
            strategy.load_state(ck["evolution"])
        except StateRefused as exc:
            raise ResumeRefused(f"{self.rundir.path}: {exc}") from None
        self.genomes = {k: GenomeRecord(**v) for k, v in ck["genomes"].items()}
        self.history = ck["history"]
        known = {}
        for ev in self.rundir.events():
            if (ev["event"] == "candidate_judged" and ev["phase"] == SEARCH
                    and ev["generation"] == strategy.generation):
                j = judged_from_event(ev)
                known[(j.genome_id, j.problem, j.sample)] = j
        log.info("resuming %s at generation %d (%d samples of it already judged)",
                 self.rundir.path, strategy.generation, len(known))
        return strategy, known

    def _check_resumable(self, ck: dict) -> None:
        """Refuse checkpoints of another format or of a different search-relevant config."""
        if ck.get("version") != CHECKPOINT_VERSION:
            raise ResumeRefused(
                f"{self.rundir.path}: checkpoint format {ck.get('version')!r} was written by an "
                f"older CORAL (this one writes format {CHECKPOINT_VERSION}: training steps and "
                f"learning rate are heavy genes, racing evaluation); use --no-resume to start "
                f"over or another run.name")
        diffs = config_differences(ck["relevant_config"], relevant_fields(self.cfg))
        if diffs:
            raise ResumeRefused(
                f"{self.rundir.path}: checkpoint was made with a different config "
                f"({'; '.join(diffs)}); use --no-resume to start over or another run.name")

    # ------------------------------------------------------------------ one generation
    def _generation(self, strategy: SearchStrategy, known: dict[Key, Judged]) -> None:
        """Evaluate one generation, tell the strategy, checkpoint."""
        g, genomes = strategy.generation, strategy.ask()
        self.pipeline.adapter_outcomes = Counter()
        t0 = time.perf_counter()
        counts, verdicts = self._race(g, genomes, known)
        scored = {}
        for genome in genomes:  # canonical order: ask() order, then problem and sample order
            agg, samples = score_genome(genome.id, self.train, counts[genome.id],
                                        self.cfg.search.pass_at_k, verdicts)
            scored[genome.id] = agg
            self.genomes[genome.id] = rec = self._record(g, genome, agg, samples)
            rec.samples_per_problem = counts[genome.id]
            self.events.write("genome_scored", generation=g, id=genome.id,
                              samples_per_problem=counts[genome.id], samples=len(samples),
                              scores=rec.scores, display=rec.display, key=rec.key)
        strategy.tell(scored)
        summary = self._summary(g, genomes, time.perf_counter() - t0)
        # The budget's own count, over every driver of this run (a resumed run goes on
        # counting, as `coral status` does), not this driver's.
        summary["samples_spent"] = spent(self.rundir.events()).samples
        self.history.append(summary)
        self.events.write("generation_summary", **summary)
        self.progress.generation_done(summary)
        self.events.sync()  # events are durable before the checkpoint that relies on them
        self._checkpoint(strategy)

    def _race(self, g: int, genomes: list[Genome], known: dict[Key, Judged]
              ) -> tuple[dict[str, int], dict[Key, Judged]]:
        """Samples per problem each genome got this generation (coral.search.racing), and
        every verdict (a resumed generation re-runs only what `known` lacks)."""
        s, k = self.cfg.search, self.cfg.search.pass_at_k
        verdicts: dict[Key, Judged] = dict(known)
        got: dict[str, int] = {}

        def run(want) -> None:
            subset = [x for x in genomes if x.id in want]
            verdicts.update(self.pipeline.evaluate(subset, self.train, want, g, SEARCH,
                                                   verdicts))
            got.update(want)

        def score(gid: str) -> float:
            agg, _ = score_genome(gid, self.train, got[gid], k, verdicts)
            return fitness.display_score(agg)

        exact = {x.id for x in genomes if self.exact(x)}
        rounds = schedule(s.evaluation, s.samples_per_problem, s.racing_first, k)
        counts = race([x.id for x in genomes], exact, rounds, s.racing_keep, run, score,
                      self._allowance(known), len(self.train), self._reserve())
        return counts, verdicts

    def exact(self, genome: Genome) -> bool:
        """Whether one sample per problem is the genome's exact score (greedy decoding)."""
        return knobs_for(genome, self.cfg.knobs).greedy

    def _record(self, generation: int, genome: Genome, agg: Scores,
                samples: list[Judged]) -> GenomeRecord:
        """The record of a freshly scored genome."""
        return GenomeRecord(
            generation=generation, genome=genome_to_dict(genome),
            key=genome.heavy.key(self.base_model, self.data_version),
            knobs=dataclasses.asdict(knobs_for(genome, self.cfg.knobs)),
            scores=agg.to_dict(), display=fitness.display_score(agg),
            fixed=sorted({j.problem for j in samples if j.scores.fixed >= 1.0}),
            samples=len(samples), unchanged=sum(j.status == "UNCHANGED" for j in samples),
            tokens=sum(j.tokens for j in samples))

    def _summary(self, g: int, genomes: list[Genome], seconds: float) -> dict:
        """Generation summary: best/median display score, pass@k, UNCHANGED, tokens, cache."""
        recs = [self.genomes[x.id] for x in genomes]
        display = [r.display for r in recs]
        best_i = max(range(len(recs)), key=lambda i: (display[i], -i))
        outcomes = self.pipeline.adapter_outcomes
        lookups = sum(outcomes.values())
        samples = sum(r.samples for r in recs)
        return {"generation": g, "seconds": round(seconds, 3), "genomes": len(recs),
                "best_display": max(display), "median_display": statistics.median(display),
                "best_genome": genomes[best_i].id, "best_scores": recs[best_i].scores,
                "best_fixed": recs[best_i].fixed,
                "unique_adapters": len({r.key for r in recs if r.key}),
                "samples": samples,
                "samples_per_problem": {x.id: r.samples_per_problem
                                        for x, r in zip(genomes, recs)},
                "unchanged": sum(r.unchanged for r in recs),
                "tokens_per_sample": round(sum(r.tokens for r in recs) / samples, 1)
                if samples else None,
                "cache_hit_rate": (outcomes.get("hit", 0) / lookups) if lookups else None}

    def _checkpoint(self, strategy: SearchStrategy) -> None:
        """Atomic checkpoint plus pareto.json and best.json."""
        self.rundir.save_checkpoint({
            "version": CHECKPOINT_VERSION, "generation": strategy.generation,
            "relevant_config": relevant_fields(self.cfg), "evolution": strategy.state_dict(),
            "cache": self.pools.cache_stats(), "history": self.history,
            "genomes": {k: dataclasses.asdict(v) for k, v in self.genomes.items()}})
        pop = strategy.population
        objectives = list(self.cfg.search.objectives)
        front = non_dominated_sort([s.vector(objectives) for _, s in pop])[0] if pop else []
        self.rundir.write_json("pareto.json", {
            "generation": strategy.generation, "objectives": objectives,
            "population": [self._pareto_row(x, s, i in front) for i, (x, s) in enumerate(pop)]})
        self.rundir.write_json("best.json", self.ranked(strategy)[0])

    def _pareto_row(self, genome: Genome, scores: Scores, on_front: bool) -> dict:
        """One survivor in pareto.json."""
        rec = self.genomes[genome.id]
        return {"id": genome.id, "vector": list(scores.vector(self.cfg.search.objectives)),
                "front": on_front, "scores": rec.scores, "fixed": rec.fixed,
                "display": rec.display, "knobs": rec.knobs, "key": rec.key,
                "heavy": rec.genome["heavy"]}

    def ranked(self, strategy: SearchStrategy) -> list[dict]:
        """Survivors best first: display score (pass@k first), then the strategy's order."""
        recs = [dict(dataclasses.asdict(self.genomes[x.id]), id=x.id)
                for x, _ in strategy.population]
        order = sorted(range(len(recs)), key=lambda i: (-recs[i]["display"], i))
        return [recs[i] for i in order]

    # ------------------------------------------------------------------ after the search
    def _finish(self, strategy: SearchStrategy) -> None:
        """Re-evaluate the best survivors on fresh seeds, pick, then the held-out check."""
        picks = reevaluate(self, strategy)
        if self.cfg.run.held_out_eval and self.held_out:
            held_out(self, picks[: self.cfg.run.held_out_top_k])

    def _live(self, generation: int, phase: str, queued: int, inflight: list) -> None:
        """Rewrite live.json (queue depths) at most every _LIVE_EVERY_S seconds."""
        now = time.monotonic()
        if now - self._last_live < _LIVE_EVERY_S:
            return
        self._last_live = now
        kinds = Counter(_STAGES[type(w).__name__] for w in inflight)
        self.rundir.write_live({
            "time": time.time(), "generation": generation, "phase": phase, "queued": queued,
            "in_flight": {k: kinds.get(k, 0) for k in ("adapter", "generate", "judge")}})
