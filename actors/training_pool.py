"""TrainingPool: Ray actors, each holding one resident base model (a `coral.training.Trainer`).

Each actor loads the base model and the training set once, then trains one adapter per call
and writes it into the adapter store (shared by all actors: a directory on a shared file
system or volume), returning its `AdapterRef`. Actors are created with `max_restarts` /
`max_task_retries` from `RayConfig`, so a training whose actor died is re-run on the restarted
actor; a training that raises (bad genes, out of memory) propagates to the caller.

Driver API::

    pool = TrainingPool(cfg)            # cfg.ray.training_pool.size actors
    ref = pool.submit(genes, key)       # ObjectRef[AdapterRef], least-loaded actor
    pool.identity()                     # (base model name, data version) for adapter keys
    pool.actors                         # handles (tests kill one)
    pool.close()
"""

from __future__ import annotations

import logging
import os
from typing import Optional

import ray

from coral.config import Config
from coral.genome import HeavyGenes
from coral.messages import AdapterRef
from coral.store import store_from_config
from coral.training import Trainer

log = logging.getLogger(__name__)


class TrainingWorker:
    """Plain class behind the actor: a `Trainer` (base model resident) and the store."""

    def __init__(self, cfg: Config, store_root: Optional[str] = None) -> None:
        self.store = store_from_config(cfg, store_root)
        self.trainer = Trainer.from_config(cfg)
        self.trained = 0

    def pid(self) -> int:
        """Process id of this worker (tests use it to see restarts)."""
        return os.getpid()

    def identity(self) -> tuple[str, str]:
        """(base model name, data version) this worker keys adapters with."""
        return self.trainer.identity()

    def train_into(self, genes: HeavyGenes, key: str) -> AdapterRef:
        """Train the adapter of `genes` and store it under `key`."""
        ref = self.trainer.train_into(self.store, genes, key)
        self.trained += 1
        return ref

    def stats(self) -> dict:
        """How many adapters this worker trained since it (re)started."""
        return {"trained": self.trained, "pid": os.getpid()}


def actor_options(cfg: Config) -> dict:
    """Ray options of a training actor: resources and fault tolerance from the config."""
    opts = cfg.ray.training_pool
    return {"num_cpus": opts.num_cpus, "num_gpus": opts.num_gpus,
            "max_restarts": cfg.ray.max_restarts, "max_task_retries": cfg.ray.max_task_retries}


class TrainingPool:
    """`cfg.ray.training_pool.size` TrainingWorker actors; work goes to the least loaded."""

    def __init__(self, cfg: Config, store_root: Optional[str] = None) -> None:
        self.cfg = cfg
        # The config is passed inline (it is small): an argument held in the object store
        # could be gone by the time Ray restarts a crashed actor.
        actor_cls = ray.remote(TrainingWorker).options(**actor_options(cfg))
        self.actors = [actor_cls.remote(cfg, store_root)
                       for _ in range(cfg.ray.training_pool.size)]
        self._in_flight: list[list["ray.ObjectRef"]] = [[] for _ in self.actors]

    def _least_loaded(self) -> int:
        """Index of the actor with the fewest unfinished trainings (lowest index on ties)."""
        for i, refs in enumerate(self._in_flight):
            if refs:
                _, pending = ray.wait(refs, num_returns=len(refs), timeout=0)
                self._in_flight[i] = pending
        return min(range(len(self.actors)), key=lambda i: len(self._in_flight[i]))

    def submit(self, genes: HeavyGenes, key: str) -> "ray.ObjectRef":
        """ObjectRef of the AdapterRef of `genes`, trained and stored by one actor."""
        i = self._least_loaded()
        ref = self.actors[i].train_into.remote(genes, key)
        self._in_flight[i].append(ref)
        return ref

    def identity(self) -> tuple[str, str]:
        """(base model name, data version) of the first actor (all load the same config)."""
        return tuple(ray.get(self.actors[0].identity.remote()))

    def close(self) -> None:
        """Kill the actors (their models go with them)."""
        for actor in self.actors:
            ray.kill(actor, no_restart=True)
        self.actors, self._in_flight = [], []
