"""TrainingPool: Ray actors, each holding one resident base model (a `coral.model.training.Trainer`).

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

from actors import metrics
from actors.pool import LeastLoaded
from coral.config import Config
from coral.search.genome import HeavyGenes
from coral.messages import AdapterRef
from coral.adapters.store import store_from_config
from coral.model.training import Trainer

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
        with metrics.busy("training"):
            ref = self.trainer.train_into(self.store, genes, key)
        self.trained += 1
        metrics.adapter_trained()
        return ref

    def stats(self) -> dict:
        """How many adapters this worker trained since it (re)started."""
        return {"trained": self.trained, "pid": os.getpid()}


class TrainingPool(LeastLoaded):
    """`cfg.ray.training_pool.size` TrainingWorker actors; work goes to the least loaded."""

    def __init__(self, cfg: Config, store_root: Optional[str] = None) -> None:
        self.cfg = cfg
        super().__init__(TrainingWorker, cfg, cfg.ray.training_pool, cfg, store_root)

    def submit(self, genes: HeavyGenes, key: str) -> "ray.ObjectRef":
        """ObjectRef of the AdapterRef of `genes`, trained and stored by one actor."""
        return self.call("train_into", genes, key)

    def identity(self) -> tuple[str, str]:
        """(base model name, data version) of the first actor (all load the same config)."""
        return tuple(ray.get(self.actors[0].identity.remote()))
