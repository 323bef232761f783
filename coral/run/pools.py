"""What the engine needs from the pools, as a small Protocol, plus the in-process version.

The engine submits three kinds of work and waits for them in completion order:
- `submit_adapter(key, genes)`   -> handle of an `AdapterReady` (cache hit, trained or joined)
- `submit_generate(requests)`    -> handle of `list[GenerationResult]` (same order)
- `submit_judge(candidates)`     -> handle of `list[Verdict]` (same order)
`wait(handles, num_returns, timeout)` returns `(ready, pending)` with `ready` in completion
order (like `ray.wait`), and `get(handle)` the value. cluster/ray_pools.py implements it with
Ray actors and ObjectRefs; `InProcessPools` runs the same plain classes in this process, so
tests and `coral run --in-process` give the same results as Ray.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Optional, Protocol, Sequence

from coral.search.genome import HeavyGenes
from coral.judge.quixbugs import Problem
from coral.messages import AdapterRef, Candidate, GenerationRequest, GenerationResult, Verdict

log = logging.getLogger(__name__)

Handle = Hashable


@dataclass(frozen=True)
class AdapterReady:
    """An adapter available in the store; how it got there (hit | trained | joined), how long."""

    ref: AdapterRef
    outcome: str
    seconds: float = 0.0


class Pools(Protocol):
    """The pools as the engine sees them (see the module docstring).

    `problems` are the problems as the judges hold them (with reference timings measured by
    calibration); candidates are scored against these.
    """

    problems: tuple[Problem, ...]

    def submit_adapter(self, key: str, genes: HeavyGenes) -> Handle:
        """Ask for the adapter of `key` (trained from `genes` on a cache miss)."""

    def submit_generate(self, requests: Sequence[GenerationRequest]) -> Handle:
        """Generate text for a batch of requests."""

    def submit_judge(self, candidates: Sequence[Candidate]) -> Handle:
        """Run candidates against their problems' tests."""

    def wait(self, handles: Sequence[Handle], num_returns: int = 1,
             timeout: Optional[float] = None) -> tuple[list[Handle], list[Handle]]:
        """Block until `num_returns` handles are done; (ready in completion order, pending)."""

    def get(self, handle: Handle) -> Any:
        """The value of a finished handle (raises the worker's infrastructure error)."""

    def cache_stats(self) -> dict:
        """Adapter cache counters (hits, trained, joined, ...)."""

    def close(self) -> None:
        """Release pools and models."""


class _Deferred:
    """A unit of in-process work: run on demand, in submission order.

    `finished` (optional): tells that the work got done as part of another's (a generate
    call whose rows a coalesced batch of an earlier call already decoded).
    """

    __slots__ = ("seq", "fn", "done", "value", "error", "finished")

    def __init__(self, seq: int, fn: Callable[[], Any],
                 finished: Callable[[], bool] = lambda: False) -> None:
        self.seq, self.fn, self.finished = seq, fn, finished
        self.done, self.value, self.error = False, None, None

    @property
    def ready(self) -> bool:
        """Done, or can be collected without more work."""
        return self.done or self.finished()

    def run(self) -> None:
        """Run once; keep the value or the exception for `get`."""
        if self.done:
            return
        try:
            self.value = self.fn()
        except BaseException as exc:  # re-raised by get(): infrastructure failures propagate
            self.error = exc
        self.done = True

    def __hash__(self) -> int:
        return self.seq

    def __repr__(self) -> str:
        return f"<task {self.seq}>"


class InProcessPools:
    """Pools that run in this process, one task at a time, oldest submitted first.

    Built from three callables so it wraps the very plain classes the Ray actors wrap:
    `adapter_fn(key, genes) -> AdapterReady`, `generate_fn(requests) -> list[GenerationResult]`,
    `judge_fn(candidates) -> list[Verdict]`. With a `coalescer` (coral.model.coalesce) the
    generate calls are queued in it instead and share batches: waiting for one decodes the
    queue's batches, oldest call first, until that call is done.
    """

    def __init__(self, problems: Sequence[Problem],
                 adapter_fn: Callable[[str, HeavyGenes], AdapterReady],
                 generate_fn: Callable[[list], list[GenerationResult]],
                 judge_fn: Callable[[list], list[Verdict]],
                 stats_fn: Callable[[], dict] = dict,
                 close_fn: Callable[[], None] = lambda: None, coalescer: Any = None) -> None:
        self.problems = tuple(problems)
        self._coalescer = coalescer
        self._adapter_fn, self._generate_fn, self._judge_fn = adapter_fn, generate_fn, judge_fn
        self._stats_fn, self._close_fn = stats_fn, close_fn
        self._seq = 0

    def _defer(self, fn: Callable[[], Any],
               finished: Callable[[], bool] = lambda: False) -> _Deferred:
        """Wrap work into a handle."""
        self._seq += 1
        return _Deferred(self._seq, fn, finished)

    def submit_adapter(self, key: str, genes: HeavyGenes) -> Handle:
        """Defer an adapter lookup/training."""
        return self._defer(lambda: self._adapter_fn(key, genes))

    def submit_generate(self, requests: Sequence[GenerationRequest]) -> Handle:
        """Defer a generation batch (queue it in the coalescer, if there is one)."""
        batch = list(requests)
        if self._coalescer is not None:
            ticket = self._coalescer.submit(batch)
            return self._defer(lambda: self._coalescer.run_until(ticket),
                               lambda: ticket.finished)
        return self._defer(lambda: self._generate_fn(batch))

    def submit_judge(self, candidates: Sequence[Candidate]) -> Handle:
        """Defer a judging batch."""
        batch = list(candidates)
        return self._defer(lambda: self._judge_fn(batch))

    def wait(self, handles: Sequence[Handle], num_returns: int = 1,
             timeout: Optional[float] = None) -> tuple[list[Handle], list[Handle]]:
        """Run the oldest unfinished handles until `num_returns` are done (timeout unused:
        in-process work cannot be interrupted)."""
        ready = [h for h in handles if h.ready]
        for task in sorted((h for h in handles if not h.ready), key=lambda t: t.seq):
            if len(ready) >= num_returns:
                break
            if task.ready:   # finished meanwhile by another task's coalesced batches
                ready.append(task)
                continue
            task.run()
            ready.append(task)
        pending = [h for h in handles if h not in ready]
        return ready, pending

    def get(self, handle: Handle) -> Any:
        """Value of a finished task (runs it if needed); re-raises its exception."""
        handle.run()
        if handle.error is not None:
            raise handle.error
        return handle.value

    def cache_stats(self) -> dict:
        """Counters of the adapter cache."""
        return dict(self._stats_fn())

    def close(self) -> None:
        """Release models."""
        self._close_fn()


def in_process_pools(cfg: Any, problems: Sequence[Problem]) -> InProcessPools:
    """In-process pools over the same plain classes the Ray actors wrap.

    The judge calibrates reference timings here (as JudgePool does once for all its actors);
    the trainer loads its base model only on the first cache miss.
    """
    from coral.adapters.cache import AdapterCache
    from coral.model.backend import create_backend
    from coral.model.coalesce import Coalescer
    from coral.judge.quixbugs import resolve_path
    from coral.judge.sandbox import Judge
    from coral.adapters.store import store_from_config
    from coral.model.training import Trainer

    judge = Judge(problems, cfg.sandbox, str(resolve_path(cfg.dataset.quixbugs)))
    calibrated = judge.calibrate()
    trainer: list = []

    def train(genes: HeavyGenes, key: str) -> AdapterRef:
        if not trainer:
            trainer.append(Trainer.from_config(cfg))
        return trainer[0].train_into(store, genes, key)

    store = store_from_config(cfg)
    cache = AdapterCache(store, train)
    backend = create_backend(cfg)
    coalescer = Coalescer(backend, cfg.generation.batch_size) if cfg.generation.coalesce else None

    def adapter(key: str, genes: HeavyGenes) -> AdapterReady:
        t0 = time.perf_counter()
        ref, outcome = cache.get_with_outcome(key, genes)
        return AdapterReady(ref, outcome, time.perf_counter() - t0)

    def close() -> None:
        judge.close()
        backend.close()

    return InProcessPools(calibrated, adapter, backend.generate, judge.judge_many,
                          cache.stats, close, coalescer)
