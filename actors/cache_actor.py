"""CacheActor: the async Ray actor in front of the TrainingPool (single flight per adapter key).

One actor owns the index of adapter key -> AdapterRef (coral.adapters.cache.CacheIndex over the
run's persistent store) and the index of key -> object reference of the adapter's
`AdapterBundle` in Ray's object store. It is an async actor, so many `get` calls are served
concurrently on one event loop: the first request for a missing key starts one training on the
least-loaded training actor and parks an asyncio future under the key; later requests for that
key await the same future ("joins"). A training failure is set on the future, so every waiter
gets the exception, and it is counted; the next request for that key tries again.

Where adapters live (no shared file system needed):
- a training actor returns the adapter as a value; this actor checks it, persists it once to
  its store (on its own node: pinned to the driver's node, so the head's disk or volume) and
  puts it into the object store, owning that copy;
- a generation actor on any node asks `bundle(key)` for the reference and fetches the bytes
  into its own local directory (actors/adapter_fetch.py), checked against the checksum;
- an object lost with its node (or with this actor's previous incarnation) is put again from
  the persisted copy (`reload`); a persisted copy that is missing or corrupt is retrained,
  once, through the same single flight. Nothing is skipped: a failure raises.

The actor is created with `max_restarts` / `max_task_retries` from the config and only plain
values as constructor arguments (the store path and the training actors' names, looked up
here), so Ray can restart it; a restarted actor rebuilds its index from the store, so nothing
trained is lost and nothing is trained twice.

Driver API::

    cache = make_cache(cfg, pool)                   # pool: a TrainingPool, kept by the caller
    ready = ray.get(cache.get_ready.remote(key, genes))   # AdapterReady(ref, outcome, seconds)
    ray.get(cache.get.remote(key, genes))           # AdapterRef
    ray.get(cache.lookup.remote(key))               # AdapterRef | None, never trains
    [obj] = ray.get(cache.bundle.remote(key))       # ObjectRef of the AdapterBundle
    ray.get(cache.stats.remote())                   # hits, misses, joins, trainings, ...
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Optional, Sequence

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from actors import metrics
from coral.adapters.bundle import AdapterCorrupt
from coral.adapters.cache import HIT, JOINED, TRAINED, CacheIndex
from coral.adapters.store import DirectoryStore, store_from_config
from coral.config import Config
from coral.messages import AdapterRef
from coral.run.pools import AdapterReady
from coral.search.genome import HeavyGenes

log = logging.getLogger(__name__)


class CacheActor:
    """Async single-flight adapter cache over a store and a list of named training actors."""

    def __init__(self, store_root: str, trainer_names: Sequence[str],
                 max_gb: Optional[float] = None) -> None:
        self.store = DirectoryStore(store_root, max_gb=max_gb)   # storage.max_gb applies here
        self.index = CacheIndex(self.store)   # rebuilt from the store on every (re)start
        self.trainers = [ray.get_actor(name) for name in trainer_names]
        self.load = [0] * len(self.trainers)
        self.inflight: dict[str, asyncio.Future] = {}
        self.bundles: dict[str, ray.ObjectRef] = {}   # key -> the AdapterBundle this actor put
        self.genes: dict[str, HeavyGenes] = {}        # what to retrain a lost adapter from
        self.shared = {"served": 0, "restored": 0, "reloads": 0}

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

    async def bundle(self, key: str) -> list:
        """[ObjectRef of the AdapterBundle of `key`], in a list so Ray hands over the reference
        and the caller fetches the bytes from the nearest copy; retrains a lost adapter once."""
        obj = self.bundles.get(key)
        if obj is None:
            obj = await self._share(key)
        self.shared["served"] += 1
        return [obj]

    async def reload(self, key: str, lost: str) -> list:
        """The object `lost` (hex id) of `key` could not be fetched: share it again."""
        obj = self.bundles.get(key)
        if obj is not None and obj.hex() == lost:
            del self.bundles[key]
            self.shared["reloads"] += 1
            log.warning("adapter %s: its object was lost; putting it again from %s",
                        key[:12], self.store)
        return await self.bundle(key)

    async def training_actors(self) -> list:
        """Handles of the training actors this cache sends misses to."""
        return list(self.trainers)

    async def stats(self) -> dict:
        """Counters (hits, misses, joins, trainings, failures, corrupt; bundles served,
        restored from the store, reloaded after a loss), index size and trainings in flight."""
        return dict(self.index.stats(), **self.shared, objects=len(self.bundles),
                    inflight=len(self.inflight))

    async def _get(self, key: str, genes: HeavyGenes) -> tuple[AdapterRef, str]:
        """Serve one request; the single-flight logic (no await before the future is parked)."""
        self.genes[key] = genes
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
        """Train on the least-loaded training actor; persist the result once and share it."""
        i = min(range(len(self.trainers)), key=lambda j: self.load[j])
        self.load[i] += 1
        try:
            bundle = await self.trainers[i].train.remote(genes, key)
        finally:
            self.load[i] -= 1
        if bundle.key != key or not bundle.verify():
            raise AdapterCorrupt(f"adapter {key[:12]} arrived damaged from its training actor")
        self.bundles.pop(key, None)
        ref = self.store.write_bundle(bundle)
        self.bundles[key] = ray.put(bundle)
        return ref

    async def _share(self, key: str) -> "ray.ObjectRef":
        """Put the persisted copy of `key` into the object store, retraining it if needed."""
        if self.index.lookup(key) is None:        # missing, or corrupt (and now removed)
            genes = self.genes.get(key)
            if genes is None:
                raise LookupError(f"adapter {key[:12]} is not in {self.store} and was never "
                                  "requested from this cache: nothing to retrain it from")
            log.warning("adapter %s: no intact persisted copy; training it again", key[:12])
            await self._get(key, genes)
        obj = self.bundles.get(key)
        if obj is None:
            bundle = self.store.read_bundle(key)
            if not bundle.verify():
                raise AdapterCorrupt(f"adapter {key[:12]} in {self.store} changed while read")
            obj = self.bundles[key] = ray.put(bundle)
            self.shared["restored"] += 1
        return obj


def make_cache(cfg: Config, pool, store_root: Optional[str] = None,
               name: Optional[str] = None) -> "ray.actor.ActorHandle":
    """Start the CacheActor in front of `pool`, a TrainingPool the caller keeps.

    The caller must hold `pool` as long as the cache is used: handles the cache looks up by
    name do not keep actors alive, the creator's do. The actor is pinned to this process's
    node (the driver's: the head, whose disk or volume holds the persistent store) and is
    named `name` (default `<pool prefix>-cache`), which is how generation actors find it.
    """
    store = store_from_config(cfg, store_root)
    name = name or pool.names[0].rsplit("-", 2)[0] + "-cache"
    here = ray.get_runtime_context().get_node_id()
    # No CPU reserved: the cache only coordinates, so it never competes with the pools.
    actor_cls = ray.remote(CacheActor).options(
        num_cpus=0, name=name, max_restarts=cfg.ray.max_restarts,
        max_task_retries=cfg.ray.max_task_retries,
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=here, soft=False))
    return actor_cls.remote(str(store.root), pool.names, store.max_gb)
