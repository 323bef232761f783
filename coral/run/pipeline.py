"""One evaluation pass through the pools: adapters → generation → judging, in completion order.

`Pipeline.evaluate(genomes, problems, ...)` returns the verdict of every (genome, problem,
sample). Within a pass no stage waits for the whole population: a genome's requests are
submitted as soon as its adapter is ready, and its judging as soon as its texts are back.
Each kind of pending work is a small frozen value (`AdapterWork`, `GenerateWork`,
`JudgeWork`) with one handler that records what finished and returns the work it unlocks.

Sampling noise is controlled by common random numbers: sample i of problem p is generated
with `sample_seed(run seed, p, i, stream)` for every genome and every strategy, so two genomes
are compared on the same draws. Streams keep the seeds of selection ("search"), of the final
re-evaluation ("final") and of the held-out check ("heldout") apart. A genome that gets more
samples later (racing) extends the same seed sequence: sample i is sample i whenever it runs.

A genome without an adapter (heavy gene `steps` 0, adapter key None) skips the adapter stage:
its requests go straight to generation with `adapter=None`, the bare base model.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import numpy as np

from coral.judge import fitness
from coral.judge.quixbugs import Problem
from coral.messages import (AdapterRef, Candidate, GenerationRequest, GenerationResult, Scores,
                            Verdict)
from coral.model.extract import extract_function
from coral.run.pools import AdapterReady, Pools
from coral.search.genome import Genome, HeavyGenes

SEARCH, FINAL, HELDOUT = "search", "final", "heldout"
STREAMS = {SEARCH: 0, FINAL: 1, HELDOUT: 2}
_TEXT_CAP = 2000     # characters of a model answer kept in events when nothing was extracted
_WAIT_S = 10.0       # longest block in wait() before refreshing live.json


def sample_seed(run_seed: int, problem: str, index: int, stream: str = SEARCH) -> int:
    """Seed of sample `index` of `problem` (31 bits): numpy SeedSequence over (run seed,
    stream, sha256 of the problem name, index). Never the genome: every genome draws the same."""
    name = np.frombuffer(hashlib.sha256(problem.encode()).digest()[:8], dtype=np.uint32)
    seq = np.random.SeedSequence([int(run_seed), STREAMS[stream], *map(int, name), int(index)])
    return int(seq.generate_state(1, dtype=np.uint32)[0]) & 0x7FFFFFFF


@dataclass(frozen=True)
class Judged:
    """One sample's verdict as the search sees it."""

    genome_id: str
    problem: str
    sample: int
    status: str
    passed: int
    total: int
    scores: Scores
    code: str
    tokens: int = 0


Key = tuple[str, str, int]  # (genome id, problem, sample index)


@dataclass(frozen=True)
class AdapterWork:
    """Get (or train) one adapter, then generate for every genome that uses it."""

    key: str
    genes: HeavyGenes
    genomes: tuple[Genome, ...]


@dataclass(frozen=True)
class GenerateWork:
    """Generate the answers of one genome (every problem x sample it still needs)."""

    requests: tuple[GenerationRequest, ...]


@dataclass(frozen=True)
class JudgeWork:
    """Judge one genome's extracted answers; `samples[i]` = (sample index, tokens) of i."""

    candidates: tuple[Candidate, ...]
    samples: tuple[tuple[int, int], ...]


Work = Union[AdapterWork, GenerateWork, JudgeWork]


@dataclass
class Pass:
    """What one evaluation pass needs and has found so far."""

    generation: int
    phase: str
    todo: dict[str, list[tuple[Problem, int]]]   # genome id -> (problem, sample) to run
    results: dict[Key, Judged] = field(default_factory=dict)
    samples: dict[str, tuple[int, int]] = field(default_factory=dict)  # request id -> index


class Pipeline:
    """Drives `Pools` for one pass at a time; events and progress go to the given sinks."""

    def __init__(self, pools: Pools, problems: dict[str, Problem], run_seed: int,
                 adapter_key: Callable[[HeavyGenes], Optional[str]],
                 knobs_of: Callable[[Genome], Any],
                 events: Any, progress: Any, max_in_flight: int,
                 on_wait: Callable[[int, str, int, list], None] = lambda *a: None) -> None:
        self.pools, self.problems, self.run_seed = pools, problems, int(run_seed)
        self.adapter_key, self.knobs_of = adapter_key, knobs_of
        self.events, self.progress, self.cap = events, progress, max_in_flight
        self.on_wait = on_wait
        self.wait_seconds = 0.0
        self.stage_seconds = {"adapter": 0.0, "generate": 0.0, "judge": 0.0}
        self.adapter_outcomes: Counter = Counter()
        self._handlers = {AdapterWork: self._on_adapter, GenerateWork: self._on_generated,
                          JudgeWork: self._on_judged}

    # ------------------------------------------------------------------ one pass
    def evaluate(self, genomes: Sequence[Genome], problems: Sequence[Problem],
                 samples: Union[int, Mapping[str, int]], generation: int, phase: str,
                 known: Optional[dict[Key, Judged]] = None) -> dict[Key, Judged]:
        """Verdict of every (genome, problem, sample < n), n = `samples` or `samples[genome
        id]`; `known` ones are not re-run."""
        known = known or {}
        run = Pass(generation, phase, {})
        for g in genomes:
            n = samples if isinstance(samples, int) else samples[g.id]
            for p in problems:
                for i in range(n):
                    if (g.id, p.name, i) in known:
                        run.results[(g.id, p.name, i)] = known[(g.id, p.name, i)]
                    else:
                        run.todo.setdefault(g.id, []).append((p, i))
        queue: deque = deque(self._first_work(genomes, run))
        self._drain(queue, run)
        return run.results

    def _first_work(self, genomes: Sequence[Genome], run: Pass) -> list[Work]:
        """One AdapterWork per distinct adapter among the genomes that still need answers;
        generation straight away for those without an adapter."""
        by_key: dict[Optional[str], list[Genome]] = {}
        for g in genomes:
            if g.id in run.todo:
                by_key.setdefault(self.adapter_key(g.heavy), []).append(g)
        n = sum(len(v) for v in run.todo.values())
        bare = by_key.pop(None, [])
        self.progress.add("adapters", len(by_key))
        self.progress.add("generated", n)
        self.progress.add("judged", n)
        work: list[Work] = [self._generate_work(g, None, run) for g in bare]
        return work + [AdapterWork(key, members[0].heavy, tuple(members))
                       for key, members in by_key.items()]

    def _drain(self, queue: deque, run: Pass) -> None:
        """Submit up to the in-flight cap, handle results as they finish, until all done."""
        inflight: dict[Any, Work] = {}
        while queue or inflight:
            while queue and len(inflight) < self.cap:
                work = queue.popleft()
                inflight[self._submit(work)] = work
            self.on_wait(run.generation, run.phase, len(queue), list(inflight.values()))
            self.progress.tick(run.generation, run.phase)
            t0 = time.perf_counter()
            # A timeout, so live.json stays fresh while long trainings run.
            ready, _ = self.pools.wait(list(inflight), num_returns=1, timeout=_WAIT_S)
            self.wait_seconds += time.perf_counter() - t0
            for handle in ready:
                work = inflight.pop(handle)
                t0 = time.perf_counter()
                value = self.pools.get(handle)
                self.wait_seconds += time.perf_counter() - t0
                queue.extend(self._handlers[type(work)](work, value, run))

    def _submit(self, work: Work) -> Any:
        """Hand one piece of work to the pools."""
        if isinstance(work, AdapterWork):
            return self.pools.submit_adapter(work.key, work.genes)
        if isinstance(work, GenerateWork):
            return self.pools.submit_generate(list(work.requests))
        return self.pools.submit_judge(list(work.candidates))

    # ------------------------------------------------------------------ handlers
    def _on_adapter(self, work: AdapterWork, ready: AdapterReady, run: Pass) -> list[Work]:
        """An adapter is ready: one GenerateWork per genome that uses it."""
        self.stage_seconds["adapter"] += ready.seconds
        self.adapter_outcomes[ready.outcome] += 1
        self.events.write("adapter_ready", generation=run.generation, phase=run.phase,
                          key=work.key, outcome=ready.outcome, seconds=round(ready.seconds, 3))
        self.progress.advance("adapters")
        return [self._generate_work(genome, ready.ref, run) for genome in work.genomes]

    def _generate_work(self, genome: Genome, ref: Optional[AdapterRef], run: Pass
                       ) -> GenerateWork:
        """The generation requests of every (problem, sample) the genome still needs."""
        knobs = self.knobs_of(genome)
        requests = []
        for p, i in run.todo[genome.id]:
            rid = f"{genome.id}/{p.name}/{i}"
            run.samples[rid] = i
            requests.append(GenerationRequest(
                request_id=rid, genome_id=genome.id, problem=p.name,
                buggy_source=p.buggy_source, adapter=ref, knobs=knobs,
                seed=sample_seed(self.run_seed, p.name, i, run.phase)))
        return GenerateWork(tuple(requests))

    def _on_generated(self, work: GenerateWork, results: list[GenerationResult],
                      run: Pass) -> list[Work]:
        """Texts are back: extract each answer's function and judge the genome's batch."""
        candidates, samples = [], []
        for res in results:
            code = extract_function(res.text, self.problems[res.problem].function)
            candidates.append(Candidate(genome_id=res.genome_id, problem=res.problem,
                                        code=code or "", raw_text=res.text))
            samples.append((run.samples[res.request_id], res.new_tokens))
            self.stage_seconds["generate"] += res.seconds
        self.events.write("genome_generated", generation=run.generation, phase=run.phase,
                          genome_id=results[0].genome_id if results else None,
                          requests=len(results), tokens=sum(r.new_tokens for r in results),
                          seconds=round(sum(r.seconds for r in results), 3),
                          threads=_mean_threads(results))
        self.progress.advance("generated", len(results))
        return [JudgeWork(tuple(candidates), tuple(samples))]

    def _on_judged(self, work: JudgeWork, verdicts: list[Verdict], run: Pass) -> list[Work]:
        """Verdicts are back: score and record each sample."""
        for cand, (sample, tokens), verdict in zip(work.candidates, work.samples, verdicts):
            scores = fitness.score(verdict, cand, self.problems[cand.problem])
            self.stage_seconds["judge"] += verdict.seconds
            judged = Judged(cand.genome_id, cand.problem, sample, verdict.status.value,
                            verdict.passed, verdict.total, scores, cand.code, tokens)
            run.results[(cand.genome_id, cand.problem, sample)] = judged
            self.events.write(
                "candidate_judged", generation=run.generation, phase=run.phase,
                genome_id=cand.genome_id, problem=cand.problem, sample=sample,
                status=judged.status, passed=judged.passed, total=judged.total,
                scores=scores.to_dict(), seconds=round(verdict.seconds, 4), tokens=tokens,
                code=cand.code,
                # why no function came out is in the answer itself
                **({} if cand.code else {"text": cand.raw_text[:_TEXT_CAP]}))
        self.progress.advance("judged", len(verdicts))
        return []


def judged_from_event(ev: dict) -> Judged:
    """A verdict recorded in events.jsonl, as the pipeline holds it."""
    return Judged(ev["genome_id"], ev["problem"], int(ev["sample"]), ev["status"],
                  int(ev["passed"]), int(ev["total"]), Scores.from_dict(ev["scores"]),
                  ev.get("code", ""), int(ev.get("tokens", 0)))


def _mean_threads(results: Sequence[Any]) -> Optional[float]:
    """Mean torch threads the rows were decoded with (backends that say so), else None."""
    threads = [r.meta["threads"] for r in results if (r.meta or {}).get("threads")]
    return round(sum(threads) / len(threads), 2) if threads else None
