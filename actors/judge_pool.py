"""JudgePool: CPU Ray actors, each holding a `Judge` with its own fork server.

The problems go through `ray.put` once (calibrated first by one task, so every actor uses
the same reference timings and hence the same time limits). Work is submitted per candidate;
`judge_iter` keeps at most `ray.max_in_flight` candidates in flight and yields
`(candidate, outcome)` in completion order (`ray.wait`). Actors are created with
`max_restarts` / `max_task_retries` from `RayConfig`: when an actor dies mid-batch Ray re-runs
its queued and running tasks on the restarted actor; if retries are exhausted the pool
itself resubmits the candidate to another actor. Each candidate is yielded exactly once.
Waits have timeouts: the judge inside an actor bounds every read from its sandbox, so an actor
that returns nothing for `stall_timeout_s` (two full candidate budgets plus slack) is stuck;
it is killed (Ray restarts it) and its candidates are resubmitted, a bounded number of times.

Driver API::

    pool = JudgePool(cfg)                      # or JudgePool(cfg, problems | ObjectRef | path)
    pool.problems                             # calibrated Problems (score with these)
    refs = pool.submit(candidates)            # one ObjectRef[Verdict] per candidate
    ref = pool.submit_batch(candidates)       # ObjectRef[list[Verdict]], same order
    for cand, outcome in pool.judge_iter(candidates): ...
    pool.close()
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from dataclasses import dataclass
from typing import Iterator, Optional, Sequence, Union

import ray
from ray.exceptions import RayActorError

from actors import metrics
from actors.pool import actor_options
from coral.config import Config, SandboxConfig
from coral.messages import Candidate, Verdict
from coral.judge.quixbugs import Problem, load_problems, resolve_path, select
from coral.judge.sandbox import Judge

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Shared:
    """The problems' ObjectRef, passed inside a value so Ray hands it over unresolved.

    Every call carries it and the actor fetches the one `ray.put` copy on first use. Actor
    constructors take only small values: Ray re-runs a constructor on restart but does not pin
    object-store arguments for that (ray-project/ray#53727), while a retried call brings its
    own ref along.
    """

    ref: "ray.ObjectRef"


class JudgeWorker:
    """Plain class behind the actor: one Judge (fork server started lazily, in-process)."""

    __test__ = False

    def __init__(self, problems: Optional[Sequence[Problem]], sandbox: SandboxConfig,
                 dataset_dir: Optional[str] = None) -> None:
        self._sandbox, self._dataset_dir = sandbox, dataset_dir
        self.judge: Optional[Judge] = None
        if problems is not None:
            self.judge = Judge(problems, sandbox, dataset_dir)

    def _judge(self, shared: Optional[Shared]) -> Judge:
        """The Judge, built on first use from the pool's shared problems."""
        if self.judge is None:
            if shared is None:
                raise ValueError("JudgeWorker built without problems needs the pool's Shared ref")
            self.judge = Judge(ray.get(shared.ref), self._sandbox, self._dataset_dir)
        return self.judge

    def pid(self) -> int:
        """Process id of this worker (tests use it to see restarts)."""
        return os.getpid()

    def calibrate(self) -> tuple[Problem, ...]:
        """Problems with reference timings measured in this worker."""
        return self._judge(None).calibrate()

    def judge_one(self, candidate: Candidate, shared: Optional[Shared] = None) -> Verdict:
        """Judge one candidate in the sandbox."""
        with metrics.busy("judge"):
            verdict = self._judge(shared).judge(candidate)
        metrics.candidates_judged(verdict.status.value)
        return verdict

    def judge_batch(self, candidates: Sequence[Candidate],
                    shared: Optional[Shared] = None) -> list[Verdict]:
        """Judge candidates in order."""
        judge = self._judge(shared)
        with metrics.busy("judge"):
            verdicts = [judge.judge(c) for c in candidates]
        for v in verdicts:
            metrics.candidates_judged(v.status.value)
        return verdicts


def _calibrate(problems: Sequence[Problem], sandbox: SandboxConfig,
               dataset_dir: Optional[str]) -> tuple[Problem, ...]:
    """Task body: measure reference timings once for the whole pool."""
    worker = JudgeWorker(problems, sandbox, dataset_dir)
    try:
        return worker.calibrate()
    finally:
        worker.judge.close()


ProblemsArg = Union[Sequence[Problem], "ray.ObjectRef", str, os.PathLike, None]


class JudgePool:
    """A pool of `JudgeWorker` actors sized by `cfg.ray.judge_pool` (see module docstring)."""

    __test__ = False

    def __init__(self, cfg: Config, problems: ProblemsArg = None) -> None:
        self.cfg = cfg
        dataset_dir = None
        if problems is None or isinstance(problems, (str, os.PathLike)):
            root = resolve_path(problems if problems is not None else cfg.dataset.quixbugs)
            dataset_dir = str(root)
            problems = select(load_problems(root), cfg.dataset.problems)
        elif isinstance(problems, ray.ObjectRef):
            problems = ray.get(problems)
        else:
            problems = tuple(problems)
        opts = cfg.ray.judge_pool
        if not all(p.reference_seconds for p in problems):
            task = ray.remote(num_cpus=opts.num_cpus)(_calibrate)
            problems = ray.get(task.remote(problems, cfg.sandbox, dataset_dir))
        self.problems: tuple[Problem, ...] = tuple(problems)
        self._problems_ref = ray.put(self.problems)
        self._shared = Shared(self._problems_ref)  # held here, so every retry can fetch it
        actor_cls = ray.remote(JudgeWorker).options(**actor_options(cfg, opts))
        self.actors = [actor_cls.remote(None, cfg.sandbox, dataset_dir)
                       for _ in range(opts.size)]
        self._next = itertools.cycle(range(len(self.actors)))
        sb = cfg.sandbox
        # A judge retries a failed server once: two budgets, plus server start and slack.
        self.stall_timeout_s = 2 * (sb.candidate_timeout_s + sb.time_floor_s) + 60.0

    def _actor(self):
        """Next actor, round robin."""
        return self.actors[next(self._next)]

    def _unstick(self, pending: dict, stalls: dict) -> None:
        """Kill (Ray restarts) the actor of the oldest pending candidate: nothing came back."""
        ref = min(pending, key=lambda r: pending[r][2])
        cand, actor, _ = pending[ref]
        stalls[id(cand)] = stalls.get(id(cand), 0) + 1
        if stalls[id(cand)] > 2:
            raise TimeoutError(f"judging {cand.genome_id}/{cand.problem} stalled 3 times "
                               f"({self.stall_timeout_s:.0f} s each)")
        log.warning("judge actor returned nothing for %.0f s; killing it (Ray restarts it)",
                    self.stall_timeout_s)
        ray.kill(actor, no_restart=False)

    def submit(self, candidates: Sequence[Candidate]) -> list["ray.ObjectRef"]:
        """One ObjectRef[Verdict] per candidate, spread over the actors."""
        return [self._actor().judge_one.remote(c, self._shared) for c in candidates]

    def submit_batch(self, candidates: Sequence[Candidate]) -> "ray.ObjectRef":
        """ObjectRef of the outcomes of `candidates` (same order), judged by one actor."""
        return self._actor().judge_batch.remote(list(candidates), self._shared)

    def judge_iter(self, candidates: Sequence[Candidate],
                   max_in_flight: Optional[int] = None) -> Iterator[tuple[Candidate, Verdict]]:
        """Yield (candidate, outcome) in completion order, capping work in flight."""
        cap = max_in_flight or self.cfg.ray.max_in_flight
        todo = list(candidates)[::-1]
        pending: dict = {}  # ref -> (candidate, actor, submitted at)
        retries: dict[int, int] = {}
        stalls: dict[int, int] = {}
        while todo or pending:
            while todo and len(pending) < cap:
                cand, actor = todo.pop(), self._actor()
                pending[actor.judge_one.remote(cand, self._shared)] = (cand, actor,
                                                                        time.monotonic())
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=self.stall_timeout_s)
            if not ready:
                self._unstick(pending, stalls)
                continue
            cand = pending.pop(ready[0])[0]
            try:
                outcome = ray.get(ready[0])
            except RayActorError:
                # Ray's own retries are exhausted: resubmit a bounded number of times, then
                # let the infrastructure error propagate (a task exception propagates at once).
                retries[id(cand)] = retries.get(id(cand), 0) + 1
                if retries[id(cand)] > max(1, len(self.actors)):
                    raise
                log.warning("judge worker lost judging %s/%s; resubmitting", cand.genome_id,
                            cand.problem)
                todo.append(cand)
                continue
            yield cand, outcome

    def close(self) -> None:
        """Kill the actors (their fork servers die with them)."""
        for actor in self.actors:
            ray.kill(actor)
        self.actors = []
