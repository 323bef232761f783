"""CacheActor: the async Ray actor in front of the TrainingPool (single flight per adapter key).

One actor owns the key -> AdapterRef index (coral.adapters.cache.CacheIndex over the adapter store).
It is an async actor, so many `get` calls are served concurrently on one event loop: the
first request for a missing key starts one training on the least-loaded training actor and
parks an asyncio future under the key; later requests for that key await the same future
("joins"). A training failure is set on the future, so every waiter gets the exception,
and it is counted; the next request for that key tries again.

The actor is created with `max_restarts` / `max_task_retries` from the config; a restarted
actor rebuilds its index from the store (adapters are written atomically with a checksum),
so nothing trained is lost and nothing is trained twice. Trainings that were in flight when
the actor died are re-requested by Ray's task retries and find their adapter in the store.

Driver API::

    cache = make_cache(cfg)                         # also starts the TrainingPool
    ref = ray.get(cache.get.remote(key, genes))     # AdapterRef
    ready = ray.get(cache.get_ready.remote(key, genes))   # AdapterReady(ref, outcome, seconds)
    ray.get(cache.lookup.remote(key))               # AdapterRef | None, never trains
    ray.get(cache.stats.remote())                   # hits, misses, joins, trainings, ...
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Optional, Sequence

import ray

from actors import metrics

from coral.adapters.cache import HIT, JOINED, TRAINED, CacheIndex
from coral.config import Config
from coral.search.genome import HeavyGenes
from coral.messages import AdapterRef
from coral.adapters.store import DirectoryStore, store_from_config
from coral.run.pools import AdapterReady

log = logging.getLogger(__name__)


class CacheActor:
    """Async single-flight adapter cache over a store and a list of training actors."""

    def __init__(self, store_root: str, trainers: Sequence["ray.actor.ActorHandle"]) -> None:
        self.store = DirectoryStore(store_root)
        self.index = CacheIndex(self.store)   # rebuilt from the store on every (re)start
        self.trainers = list(trainers)
        self.load = [0] * len(self.trainers)
        self.inflight: dict[str, asyncio.Future] = {}

    async def get(self, key: str, genes: HeavyGenes) -> AdapterRef:
        """The adapter of `key`: stored, joined from the training in flight, or trained now."""
        return (await self._get(key, genes))[0]

    async def get_ready(self, key: str, genes: HeavyGenes) -> AdapterReady:
        """Like `get`, plus how it was served (hit | joined | trained) and the seconds waited."""
        start = time.perf_counter()
        ref, outcome = await self._get(key, genes)
        return AdapterReady(ref, outcome, time.perf_counter() - start)

    async def lookup(self, key: str) -> Optional[AdapterRef]:
        """The stored, verified adapter of `key`, or None (never trains)."""
        return self.index.lookup(key)

    async def training_actors(self) -> list:
        """Handles of the training actors this cache sends misses to."""
        return list(self.trainers)

    async def stats(self) -> dict:
        """Counters (hits, misses, joins, trainings, failures, corrupt) and index size."""
        return dict(self.index.stats(), inflight=len(self.inflight))

    async def _get(self, key: str, genes: HeavyGenes) -> tuple[AdapterRef, str]:
        """Serve one request; the single-flight logic (no await before the future is parked)."""
        ref = self.index.lookup(key)
        if ref is not None:
            self.index.count("hits")
            metrics.cache_lookup("hit")
            return ref, HIT
        future = self.inflight.get(key)
        if future is not None:
            self.index.count("joins")
            metrics.cache_lookup("join")
            # shield: a cancelled joiner must not cancel the training others wait for
            return await asyncio.shield(future), JOINED
        future = asyncio.get_running_loop().create_future()
        self.inflight[key] = future
        self.index.count("misses")
        metrics.cache_lookup("miss")
        try:
            ref = await self._train(key, genes)
        except BaseException as exc:
            self.index.count("failures")
            del self.inflight[key]
            future.set_exception(exc)
            future.exception()   # retrieved here, so a failure nobody joined is not re-logged
            log.error("training of adapter %s failed: %s", key[:12], exc)
            raise
        self.index.count("trainings")
        self.index.add(ref)
        del self.inflight[key]
        future.set_result(ref)
        return ref, TRAINED

    async def _train(self, key: str, genes: HeavyGenes) -> AdapterRef:
        """Run one training on the least-loaded training actor."""
        i = min(range(len(self.trainers)), key=lambda j: self.load[j])
        self.load[i] += 1
        try:
            return await self.trainers[i].train_into.remote(genes, key)
        finally:
            self.load[i] -= 1


def make_cache(cfg: Config, store_root: Optional[str] = None, pool=None) -> "ray.actor.ActorHandle":
    """Start the TrainingPool (unless given) and the CacheActor in front of it; return the cache."""
    from actors.training_pool import TrainingPool

    root = str(store_from_config(cfg, store_root).root)
    # The cache actor holds the only other handles to the training actors, which keeps them
    # alive after the driver drops `pool`; killing the cache actor releases them.
    pool = pool or TrainingPool(cfg, root)
    # The cache only coordinates: no CPU reserved, so it never competes with the pools.
    # Ray logs once that this constructor has object-store arguments (the training actors'
    # handles, ray-project/ray#53727): a restarted cache needs those actors alive, which
    # they are while this cache (or the driver's pool) holds them.
    actor_cls = ray.remote(CacheActor).options(
        num_cpus=0, max_restarts=cfg.ray.max_restarts, max_task_retries=cfg.ray.max_task_retries)
    return actor_cls.remote(root, pool.actors)
