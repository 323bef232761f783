"""Adapter cache: index of adapter key -> AdapterRef over a store, with single-flight training.

Heavy genes repeat across a population and across generations, and training is the most
expensive step, so every adapter is trained at most once: a request for a key being trained
joins that training instead of starting another ("single flight"), and a trained adapter is
found again after a restart because the index is rebuilt from the store. A stored adapter is
verified (checksum) on every hit; a corrupt or partial one is dropped and trained again.

`CacheIndex` is the bookkeeping shared by the in-process `AdapterCache` (threads) and the
async Ray `CacheActor` (actors/cache_actor.py), which differ only in how waiters wait.
A training failure is counted and re-raised to every waiter; it is never swallowed.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Callable, Optional

from coral.search.genome import HeavyGenes
from coral.messages import AdapterRef
from coral.adapters.gc import record_use
from coral.adapters.store import AdapterStore

log = logging.getLogger(__name__)

# How a `get` was served (the engine's adapter events and report count these).
HIT, JOINED, TRAINED = "hit", "joined", "trained"


@dataclass(frozen=True)
class CacheStats:
    """Counters: hits (verified adapter found), misses (a training started), joins (waited on
    a training in flight), trainings finished, failures, corrupt adapters dropped."""

    hits: int = 0
    misses: int = 0
    joins: int = 0
    trainings: int = 0
    failures: int = 0
    corrupt: int = 0
    size: int = 0


class CacheIndex:
    """The key -> AdapterRef index of one store, with counters; not thread-safe by itself."""

    def __init__(self, store: AdapterStore) -> None:
        self.store = store
        self.index: dict[str, AdapterRef] = {}
        self.counts = {name: 0 for name in ("hits", "misses", "joins", "trainings",
                                            "failures", "corrupt")}
        self.rebuild()

    def rebuild(self) -> None:
        """Re-read the store: verified adapters are indexed, broken ones counted and left out."""
        self.index.clear()
        for key in self.store.keys():
            if self.store.verify(key):
                try:
                    self.index[key] = self.store.ref(key)
                except FileNotFoundError:
                    pass  # pruned since it was verified (`coral cache gc`, storage.max_gb)
            elif self.store.exists(key):   # a folder gone meanwhile was pruned, not broken
                self.counts["corrupt"] += 1
                log.warning("adapter %s in %s is corrupt or partial; it will be retrained",
                            key[:12], self.store)
        log.info("adapter index rebuilt: %d adapters", len(self.index))

    def lookup(self, key: str) -> Optional[AdapterRef]:
        """The verified ref of `key`, or None; a corrupt stored adapter is removed."""
        try:
            return self._lookup(key)
        except FileNotFoundError:
            # Pruned between two looks by another process (`coral cache gc`, another run's
            # storage.max_gb): a miss, as if it had never been stored.
            self.index.pop(key, None)
            return None

    def _lookup(self, key: str) -> Optional[AdapterRef]:
        """`lookup`; FileNotFoundError when the adapter vanishes while it is looked at."""
        ref = self.index.get(key)
        if ref is None and self.store.exists(key):
            ref = self.store.ref(key)   # written by another process since the rebuild
        if ref is None:
            return None
        if not self.store.exists(key):  # pruned (`coral cache gc`, storage.max_gb): a miss
            self.index.pop(key, None)
            return None
        if self.store.verify(key):
            self.index[key] = ref
            record_use(self.store.local_path(key))
            return ref
        self.index.pop(key, None)
        if not self.store.exists(key):  # pruned while it was verified: a miss, not corrupt
            return None
        self.counts["corrupt"] += 1
        log.warning("adapter %s failed verification; removing it to retrain", key[:12])
        self.store.remove(key)
        return None

    def add(self, ref: AdapterRef) -> None:
        """Index a freshly trained adapter."""
        self.index[ref.key] = ref
        record_use(self.store.local_path(ref.key))

    def count(self, name: str) -> None:
        """Increment one counter."""
        self.counts[name] += 1

    def stats(self) -> dict:
        """A snapshot of the counters as plain data (checkpoints store it as JSON)."""
        return dataclasses.asdict(CacheStats(size=len(self.index), **self.counts))


TrainFn = Callable[[HeavyGenes, str], AdapterRef]


class AdapterCache:
    """In-process single-flight cache: `get` returns a stored adapter or trains it once."""

    def __init__(self, store: AdapterStore, train_fn: TrainFn) -> None:
        self.store = store
        self.train_fn = train_fn
        self._index = CacheIndex(store)
        self._lock = threading.Lock()
        self._inflight: dict[str, Future] = {}

    def lookup(self, key: str) -> Optional[AdapterRef]:
        """The stored, verified adapter of `key`, or None (never trains)."""
        with self._lock:
            return self._index.lookup(key)

    def get(self, key: str, genes: HeavyGenes) -> AdapterRef:
        """The adapter of `key`: a hit, a join of the training in flight, or a new training."""
        return self.get_with_outcome(key, genes)[0]

    def get_with_outcome(self, key: str, genes: HeavyGenes) -> tuple[AdapterRef, str]:
        """(ref, how it was obtained: "hit" | "joined" | "trained")."""
        with self._lock:
            ref = self._index.lookup(key)
            if ref is not None:
                self._index.count("hits")
                return ref, HIT
            future = self._inflight.get(key)
            owner = future is None
            if owner:
                future = self._inflight[key] = Future()
                self._index.count("misses")
            else:
                self._index.count("joins")
        if not owner:
            return future.result(), JOINED
        try:
            ref = self.train_fn(genes, key)
        except BaseException as exc:
            with self._lock:
                self._index.count("failures")
                del self._inflight[key]
            future.set_exception(exc)
            raise
        with self._lock:
            self._index.count("trainings")
            self._index.add(ref)
            del self._inflight[key]
        future.set_result(ref)
        return ref, TRAINED

    def stats(self) -> dict:
        """Counters and index size."""
        with self._lock:
            return self._index.stats()
