"""The driver loop: ask → adapters → generate → judge → score → tell, pipelined, resumable.

Written against `coral.run.pools.Pools`, so the same code drives in-process pools (tests,
``coral run --in-process``) and Ray actors (cluster/ray_pools.py). Within a generation no
stage waits for the whole population: a genome's generation is submitted as soon as its
adapter is ready, and a batch's judging as soon as its texts are back. Results arrive in
completion order but are put back in canonical order (genome order of `ask()`, problem order
of the dataset) before anything that affects the search, so a run is a function of its seed.

Resume: checkpoint.json holds the evolution state after the last completed generation; the
interrupted generation is asked again (same genomes: the RNG state is in the checkpoint) and
candidates already judged in it are taken from events.jsonl instead of being re-run, so
nothing is lost and nothing is counted twice.
"""

from __future__ import annotations

import hashlib
import logging
import statistics
import time
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from coral.judge import fitness
from coral.config import Config
from coral.search.evolution import Evolution
from coral.model.extract import extract_function
from coral.search.genome import Genome, genome_to_dict
from coral.search.knobs import knobs_for
from coral.messages import Candidate, GenerationRequest, Scores
from coral.run.progress import Progress
from coral.judge.quixbugs import Problem, load_problems, select, split
from coral.run.rundir import RunDir, config_differences, relevant_fields
from coral.run.pools import AdapterReady, Pools

log = logging.getLogger(__name__)

CHECKPOINT_VERSION = 1
SEARCH, HELDOUT = "search", "heldout"
_LIVE_EVERY_S = 2.0  # how often live.json (queue depths for `coral status`) is rewritten
_WAIT_S = 10.0       # longest block in wait() before refreshing live.json
_TEXT_CAP = 2000     # characters of a model answer kept in events when nothing was extracted


class ResumeRefused(RuntimeError):
    """The run directory's checkpoint was made with a different search-relevant config."""


@dataclass(frozen=True)
class Judged:
    """One candidate's verdict as the search sees it."""

    genome_id: str
    problem: str
    status: str
    passed: int
    total: int
    scores: Scores
    code: str


def request_seed(run_seed: int, genome_id: str, problem: str) -> int:
    """Sampling seed of one request: sha256 of (run seed, genome, problem), 31 bits."""
    digest = hashlib.sha256(f"{run_seed}:{genome_id}:{problem}".encode()).hexdigest()
    return int(digest[:8], 16) & 0x7FFFFFFF


def problems_for(cfg: Config) -> tuple[tuple[Problem, ...], tuple[Problem, ...]]:
    """(train, held-out) problems of a config: subset, deterministic split, train cap."""
    chosen = select(load_problems(cfg.dataset.quixbugs), cfg.dataset.problems)
    train, held = split(chosen, cfg.dataset.held_out_fraction, cfg.dataset.split_seed)
    if cfg.dataset.max_train_problems:
        train = train[: cfg.dataset.max_train_problems]
    return train, held


def scores_to_dict(s: Scores) -> dict:
    """Plain form of Scores (all objectives plus `fixed`)."""
    return {k: getattr(s, k) for k in (*Scores.OBJECTIVES, "fixed")}


def scores_from_dict(d: dict) -> Scores:
    """Inverse of `scores_to_dict`."""
    return Scores(**{k: float(d[k]) for k in (*Scores.OBJECTIVES, "fixed")})


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
        self.genomes: dict[str, dict] = {}   # per-genome record, saved in the checkpoint
        self.history: list[dict] = []        # generation summaries
        self.wait_seconds = 0.0              # time blocked in pools.wait/get
        self.stage_seconds = {"adapter": 0.0, "generate": 0.0, "judge": 0.0}
        self.stage_counts = {"adapter": 0, "generate": 0, "judge": 0}
        self._last_live = 0.0
        self._outcomes: Counter = Counter()  # adapter outcomes of the current generation

    # ------------------------------------------------------------------ whole run
    def run(self, resume: bool = True) -> RunDir:
        """Run (or resume) the search to cfg.search.generations, then the held-out check."""
        t_start = time.perf_counter()
        self.rundir.create()
        evo, known = self._start(resume)
        self.rundir.write_config(self.cfg)
        self.events = self.rundir.open_events()
        self.events.write("run_started", generation=evo.generation, resumed=bool(known) or
                          evo.generation > 0, config=self.cfg.source,
                          train_problems=[p.name for p in self.train],
                          held_out_problems=[p.name for p in self.held_out],
                          base_model=self.base_model, data_version=self.data_version)
        try:
            while evo.generation < self.cfg.search.generations:
                self._generation(evo, known)
                known = {}
            if self.cfg.run.held_out_eval and self.held_out:
                self._held_out(evo)
            elapsed = time.perf_counter() - t_start
            self.events.write("run_ended", seconds=round(elapsed, 3),
                              wait_seconds=round(self.wait_seconds, 3),
                              driver_seconds=round(elapsed - self.wait_seconds, 3),
                              generations=evo.generation, cache=self.pools.cache_stats())
            self.rundir.clear_live()
        finally:
            self.events.close()
            self.progress.close()
        return self.rundir

    def _start(self, resume: bool) -> tuple[Evolution, dict]:
        """Fresh evolution, or the checkpoint's plus the interrupted generation's verdicts."""
        ck = self.rundir.load_checkpoint() if resume else None
        if ck is None:
            self.rundir.clear()
            return Evolution(self.cfg.search, self.cfg.run.seed), {}
        diffs = config_differences(ck["relevant_config"], relevant_fields(self.cfg))
        if diffs:
            raise ResumeRefused(
                f"{self.rundir.path}: checkpoint was made with a different config "
                f"({'; '.join(diffs)}); use --no-resume to start over or another run.name")
        evo = Evolution.from_state(self.cfg.search, ck["evolution"])
        self.genomes, self.history = ck["genomes"], ck["history"]
        known = {}
        for ev in self.rundir.events():
            if (ev["event"] == "candidate_judged" and ev["phase"] == SEARCH
                    and ev["generation"] == evo.generation):
                known[(ev["genome_id"], ev["problem"])] = _judged_from_event(ev)
        log.info("resuming %s at generation %d (%d verdicts of it already recorded)",
                 self.rundir.path, evo.generation, len(known))
        return evo, known

    # ------------------------------------------------------------------ one generation
    def _generation(self, evo: Evolution, known: dict) -> None:
        """Evaluate one generation, tell the evolution, checkpoint."""
        g = evo.generation
        genomes = evo.ask()
        self._outcomes = Counter()
        t0 = time.perf_counter()
        verdicts = self.evaluate(genomes, self.train, g, SEARCH, known)
        scored = {}
        for genome in genomes:  # canonical order: ask() order, then dataset problem order
            per = [verdicts[(genome.id, p.name)].scores for p in self.train]
            agg = fitness.aggregate(per)
            scored[genome.id] = agg.vector()
            self.genomes[genome.id] = {
                "generation": g, "genome": genome_to_dict(genome),
                "key": genome.heavy.key(self.base_model, self.data_version),
                "knobs": knobs_for(genome, self.cfg.knobs).__dict__,
                "scores": scores_to_dict(agg), "display": fitness.display_score(agg),
                "fixed": [p.name for p in self.train
                          if verdicts[(genome.id, p.name)].scores.fixed >= 1.0]}
        evo.tell(scored)
        summary = self._summary(g, genomes, time.perf_counter() - t0)
        self.history.append(summary)
        self.events.write("generation_summary", **summary)
        self.progress.generation_done(summary)
        self.events.sync()  # events are durable before the checkpoint that relies on them
        self._checkpoint(evo, self.pools.cache_stats())

    def _summary(self, g: int, genomes: list[Genome], seconds: float) -> dict:
        """Generation summary: best/median display score, fixed counts, cache hit rate."""
        recs = [self.genomes[x.id] for x in genomes]
        display = [r["display"] for r in recs]
        best = max(recs, key=lambda r: r["display"])
        hits = self._outcomes.get("hit", 0)
        lookups = sum(self._outcomes.values())
        return {"generation": g, "seconds": round(seconds, 3), "genomes": len(recs),
                "best_display": max(display), "median_display": statistics.median(display),
                "best_genome": best["genome"]["id"], "best_scores": best["scores"],
                "best_fixed": best["fixed"], "unique_adapters": len({r["key"] for r in recs}),
                "cache_hit_rate": (hits / lookups) if lookups else None}

    def _checkpoint(self, evo: Evolution, cache: dict) -> None:
        """Atomic checkpoint plus pareto.json and best.json."""
        pop = evo.population
        self.rundir.save_checkpoint({
            "version": CHECKPOINT_VERSION, "generation": evo.generation,
            "relevant_config": relevant_fields(self.cfg), "evolution": evo.state_dict(),
            "cache": cache, "genomes": self.genomes, "history": self.history})
        front_ids = {x.id for x, _ in evo.pareto_front()}
        self.rundir.write_json("pareto.json", {
            "generation": evo.generation, "objectives": list(Scores.OBJECTIVES),
            "population": [{"id": x.id, "vector": list(v), "front": x.id in front_ids,
                            **{k: self.genomes[x.id][k] for k in ("scores", "fixed", "display",
                                                                  "knobs", "key")},
                            "heavy": self.genomes[x.id]["genome"]["heavy"]} for x, v in pop]})
        self.rundir.write_json("best.json", self.ranked(evo)[0])

    def ranked(self, evo: Evolution) -> list[dict]:
        """Survivors best first: most problems fixed, then display score, then NSGA-II order."""
        recs = [dict(self.genomes[x.id], id=x.id) for x, _ in evo.population]
        order = sorted(range(len(recs)),
                       key=lambda i: (-len(recs[i]["fixed"]), -recs[i]["display"], i))
        return [recs[i] for i in order]

    # ------------------------------------------------------------------ held-out check
    def _held_out(self, evo: Evolution) -> None:
        """Re-score the top genomes on held-out problems (never used for selection)."""
        top = self.ranked(evo)[: self.cfg.run.held_out_top_k]
        by_id = {x.id: x for x, _ in evo.population}
        genomes = [by_id[r["id"]] for r in top]
        verdicts = self.evaluate(genomes, self.held_out, evo.generation, HELDOUT, {})
        out = []
        for genome in genomes:
            per = [verdicts[(genome.id, p.name)] for p in self.held_out]
            agg = fitness.aggregate([v.scores for v in per])
            doc = {"id": genome.id, "scores": scores_to_dict(agg),
                   "display": fitness.display_score(agg),
                   "fixed": [v.problem for v in per if v.scores.fixed >= 1.0],
                   "search_scores": self.genomes[genome.id]["scores"]}
            out.append(doc)
            self.events.write("heldout_scored", **doc)
        self.rundir.write_json("heldout.json", {"problems": [p.name for p in self.held_out],
                                                "genomes": out})

    # ------------------------------------------------------------------ the pipeline
    def evaluate(self, genomes: Sequence[Genome], problems: Sequence[Problem], generation: int,
                 phase: str, known: dict) -> dict[tuple[str, str], Judged]:
        """Verdict of every (genome, problem), pipelined through the pools."""
        results: dict[tuple[str, str], Judged] = {}
        todo: dict[str, list[Problem]] = {}
        for genome in genomes:
            for p in problems:
                if (genome.id, p.name) in known:
                    results[(genome.id, p.name)] = known[(genome.id, p.name)]
                else:
                    todo.setdefault(genome.id, []).append(p)
        by_key: dict[str, list[Genome]] = {}
        for genome in genomes:
            if genome.id in todo:
                by_key.setdefault(genome.heavy.key(self.base_model, self.data_version),
                                  []).append(genome)
        queue: deque = deque(("adapter", key, members[0].heavy) for key, members
                             in by_key.items())
        self.progress.add("adapters", len(by_key))
        self.progress.add("generated", sum(len(v) for v in todo.values()))
        self.progress.add("judged", sum(len(v) for v in todo.values()))
        inflight: dict[Any, tuple] = {}
        cap = self.cfg.ray.max_in_flight
        while queue or inflight:
            while queue and len(inflight) < cap:
                item = queue.popleft()
                inflight[self._submit(item)] = item
            self._live(generation, phase, queue, inflight)
            self.progress.tick(generation, phase)
            t0 = time.perf_counter()
            # A timeout, so live.json stays fresh while long trainings run.
            ready, _ = self.pools.wait(list(inflight), num_returns=1, timeout=_WAIT_S)
            self.wait_seconds += time.perf_counter() - t0
            for handle in ready:
                item = inflight.pop(handle)
                t0 = time.perf_counter()
                value = self.pools.get(handle)
                self.wait_seconds += time.perf_counter() - t0
                queue.extend(self._on_done(item, value, by_key, todo, generation, phase,
                                           results))
        return results

    def _submit(self, item: tuple) -> Any:
        """Hand one queued item to the pools."""
        kind, payload = item[0], item[1]
        if kind == "adapter":
            return self.pools.submit_adapter(payload, item[2])
        if kind == "generate":
            return self.pools.submit_generate(payload)
        return self.pools.submit_judge(payload)

    def _on_done(self, item: tuple, value: Any, by_key: dict, todo: dict, generation: int,
                 phase: str, results: dict) -> list[tuple]:
        """Record a finished task; return the follow-up work it unlocks."""
        kind = item[0]
        if kind == "adapter":
            ready: AdapterReady = value
            self._stage("adapter", ready.seconds)
            self._outcomes[ready.outcome] += 1
            self.events.write("adapter_ready", generation=generation, phase=phase, key=item[1],
                              outcome=ready.outcome, seconds=round(ready.seconds, 3))
            self.progress.advance("adapters")
            follow = []
            for genome in by_key[item[1]]:
                knobs = knobs_for(genome, self.cfg.knobs)
                requests = [GenerationRequest(
                    request_id=f"{genome.id}/{p.name}", genome_id=genome.id, problem=p.name,
                    buggy_source=p.buggy_source, adapter=ready.ref, knobs=knobs,
                    seed=request_seed(self.cfg.run.seed, genome.id, p.name))
                    for p in todo[genome.id]]
                follow.append(("generate", requests))
            return follow
        if kind == "generate":
            candidates = []
            for res in value:
                p = self.problems[res.problem]
                self._stage("generate", res.seconds)
                code = extract_function(res.text, p.function)
                candidates.append(Candidate(genome_id=res.genome_id, problem=res.problem,
                                            code=code or "", raw_text=res.text))
            self.events.write("genome_generated", generation=generation, phase=phase,
                              genome_id=value[0].genome_id if value else None,
                              requests=len(value), tokens=sum(r.new_tokens for r in value),
                              seconds=round(sum(r.seconds for r in value), 3))
            self.progress.advance("generated", len(value))
            return [("judge", candidates)]
        for cand, outcome in zip(item[1], value):
            p = self.problems[cand.problem]
            scores = fitness.score(outcome, cand, p)
            self._stage("judge", outcome.seconds)
            judged = Judged(cand.genome_id, cand.problem, outcome.status.value, outcome.passed,
                            outcome.total, scores, cand.code)
            results[(cand.genome_id, cand.problem)] = judged
            self.events.write("candidate_judged", generation=generation, phase=phase,
                              genome_id=cand.genome_id, problem=cand.problem,
                              status=judged.status, passed=judged.passed, total=judged.total,
                              scores=scores_to_dict(scores), seconds=round(outcome.seconds, 4),
                              code=cand.code,
                              # why no function came out is in the answer itself
                              **({} if cand.code else {"text": cand.raw_text[:_TEXT_CAP]}))
        self.progress.advance("judged", len(value))
        return []

    def _stage(self, stage: str, seconds: float) -> None:
        """Accumulate busy seconds of a stage (for utilisation figures)."""
        self.stage_seconds[stage] += float(seconds)
        self.stage_counts[stage] += 1

    def _live(self, generation: int, phase: str, queue: deque, inflight: dict) -> None:
        """Rewrite live.json (queue depths) at most every _LIVE_EVERY_S seconds."""
        now = time.monotonic()
        if now - self._last_live < _LIVE_EVERY_S:
            return
        self._last_live = now
        kinds = [i[0] for i in inflight.values()]
        self.rundir.write_live({
            "time": time.time(), "generation": generation, "phase": phase,
            "queued": len(queue), "in_flight": {k: kinds.count(k) for k in
                                                ("adapter", "generate", "judge")}})


def _judged_from_event(ev: dict) -> Judged:
    """A verdict recorded in events.jsonl, as the engine holds it."""
    return Judged(ev["genome_id"], ev["problem"], ev["status"], int(ev["passed"]),
                  int(ev["total"]), scores_from_dict(ev["scores"]), ev.get("code", ""))
