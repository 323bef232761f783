"""TrainingPool: Ray actors, each holding one resident base model (a `coral.model.training.Trainer`).

Each actor loads the base model and the training set once, then trains one adapter per call
and returns it as a value, an `AdapterBundle` (weights, config, metadata, checksum): the result
lands in Ray's object store on the actor's node, and the CacheActor persists it and hands it
on. No file system is shared with the other nodes. Actors are created with `max_restarts` /
`max_task_retries` from `RayConfig`, so a training whose actor died is re-run on the restarted
actor; a training that raises (bad genes, out of memory) propagates to the caller.

The actors are named `<name_prefix>-<i>` so the CacheActor looks them up by name instead of
receiving their handles as constructor arguments.

Driver API::

    pool = TrainingPool(cfg, name_prefix="coral-1a2b-train")
    ref = pool.submit(genes, key)       # ObjectRef[AdapterBundle], least-loaded actor
    pool.identity()                     # (base model name, data version) for adapter keys
    pool.actors, pool.names             # handles (tests kill one), their names
    pool.close()
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from typing import Optional

import ray

from actors import metrics
from actors.pool import LeastLoaded
from coral.adapters.bundle import AdapterBundle
from coral.config import Config
from coral.search.genome import HeavyGenes
from coral.model.training import Trainer

log = logging.getLogger(__name__)


class TrainingWorker:
    """Plain class behind the actor: a `Trainer` (base model resident)."""

    def __init__(self, cfg: Config) -> None:
        self.trainer = Trainer.from_config(cfg)
        self.trained = 0

    def pid(self) -> int:
        """Process id of this worker (tests use it to see restarts)."""
        return os.getpid()

    def identity(self) -> tuple[str, str]:
        """(base model name, data version) this worker keys adapters with."""
        return self.trainer.identity()

    def train(self, genes: HeavyGenes, key: str) -> AdapterBundle:
        """Train the adapter of `genes` and return it as a value (nothing stays on disk)."""
        with metrics.busy("training"):
            out, meta = self.trainer.train(genes, key)
        try:
            bundle = AdapterBundle.from_dir(key, out, meta)
        finally:
            shutil.rmtree(out, ignore_errors=True)
        self.trained += 1
        metrics.adapter_trained()
        return bundle

    def stats(self) -> dict:
        """How many adapters this worker trained since it (re)started, and where it runs."""
        return {"trained": self.trained, "pid": os.getpid(),
                "node": ray.get_runtime_context().get_node_id()}


class TrainingPool(LeastLoaded):
    """`cfg.ray.training_pool.size` TrainingWorker actors; work goes to the least loaded."""

    def __init__(self, cfg: Config, name_prefix: Optional[str] = None) -> None:
        self.cfg = cfg
        super().__init__(TrainingWorker, cfg, cfg.ray.training_pool, cfg,
                         name_prefix=name_prefix or f"coral-{uuid.uuid4().hex[:8]}-train")

    def submit(self, genes: HeavyGenes, key: str) -> "ray.ObjectRef":
        """ObjectRef of the AdapterBundle of `genes`, trained by one actor."""
        return self.call("train", genes, key)

    def identity(self) -> tuple[str, str]:
        """(base model name, data version) of the first actor (all load the same config)."""
        return tuple(ray.get(self.actors[0].identity.remote()))
