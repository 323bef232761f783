"""CORAL's live metrics, exported the Ray way (`ray.util.metrics`).

Each process (actor or driver) records into Ray's metrics; every node's metrics agent exports
them on its Prometheus endpoint (`ray.nodes()[i]["MetricsExportPort"]`, written to the run's
ray.json), which the Ray dashboard's Metrics view, Grafana or any Prometheus scrapes. Names
there get Ray's prefix and counters a `_total` suffix, e.g. ``ray_coral_samples_generated_total``.

| metric | kind | tags | recorded by |
| --- | --- | --- | --- |
| coral_pool_queue_depth | gauge | pool | the driver (`QueueDepth` in cluster/ray_pools.py) |
| coral_pool_busy_seconds | counter | pool | each pool's actor, around its work |
| coral_samples_generated | counter | | GenerationWorker |
| coral_candidates_judged | counter | status | JudgeWorker |
| coral_cache_lookups | counter | outcome (hit, miss, join) | CacheActor |
| coral_adapter_trainings | counter | | TrainingWorker |

Pools: "training", "generation", "judge". Recording is cheap (in-process aggregation, exported
every few seconds) and outside Ray (in-process pools, tests) it does nothing.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from typing import Iterator

_SPECS = {
    "coral_pool_queue_depth": ("Gauge", "calls sent to a pool and not finished yet", ("pool",)),
    "coral_pool_busy_seconds": ("Counter", "seconds a pool's actors spent working", ("pool",)),
    "coral_samples_generated": ("Counter", "candidate fixes generated", ()),
    "coral_candidates_judged": ("Counter", "candidates judged, by verdict status", ("status",)),
    "coral_cache_lookups": ("Counter", "adapter cache lookups: hit, miss (a training "
                                       "started) or join (waited on one)", ("outcome",)),
    "coral_adapter_trainings": ("Counter", "adapters trained", ()),
}
_made: dict = {}


def _metric(name: str):
    """The metric object of this process (made on first use), or None outside Ray."""
    import ray
    if not ray.is_initialized():
        return None
    if name not in _made:
        from ray.util import metrics
        kind, description, tags = _SPECS[name]
        _made[name] = getattr(metrics, kind)(name, description=description, tag_keys=tags)
    return _made[name]


def _inc(name: str, value: float = 1.0, **tags: str) -> None:
    metric = _metric(name)
    if metric is not None and value > 0:
        metric.inc(value, tags=tags or None)


def queue_depth(pool: str, depth: int) -> None:
    """Calls of `pool` in flight (set by whoever dispatches them)."""
    metric = _metric("coral_pool_queue_depth")
    if metric is not None:
        metric.set(depth, tags={"pool": pool})


@contextlib.contextmanager
def busy(pool: str) -> Iterator[None]:
    """Count the seconds of the block as busy time of `pool` (also when it raises)."""
    start = time.perf_counter()
    try:
        yield
    finally:
        _inc("coral_pool_busy_seconds", time.perf_counter() - start, pool=pool)


class QueueDepth:
    """Driver side: the calls in flight per pool, from what was sent and what is still pending
    after each `ray.wait` (adapter requests count as the training pool's: a miss waits for one)."""

    POOLS = ("training", "generation", "judge")

    def __init__(self) -> None:
        self._pool_of: dict = {}

    def sent(self, handle, pool: str):
        """Note a call sent to `pool`; returns the handle."""
        self._pool_of[handle] = pool
        return handle

    def update(self, pending) -> None:
        """Only `pending` handles are still in flight: set every pool's gauge."""
        self._pool_of = {h: self._pool_of[h] for h in pending if h in self._pool_of}
        counts = Counter(self._pool_of.values())
        for pool in self.POOLS:
            queue_depth(pool, counts.get(pool, 0))


def samples_generated(n: int) -> None:
    """n candidate fixes generated."""
    _inc("coral_samples_generated", n)


def candidates_judged(status: str, n: int = 1) -> None:
    """n candidates judged with verdict `status` (OK, FAIL, TIMEOUT, UNCHANGED, ...)."""
    _inc("coral_candidates_judged", n, status=status)


def cache_lookup(outcome: str) -> None:
    """One adapter cache lookup: "hit", "miss" or "join"."""
    _inc("coral_cache_lookups", 1, outcome=outcome)


def adapter_trained() -> None:
    """One adapter trained."""
    _inc("coral_adapter_trainings", 1)
