"""The engine's `Pools` on Ray: the pools as actors, handles as ObjectRefs, `ray.wait`.

- adapters: `CacheActor.get` (single flight per key; misses go to the TrainingPool); they
  travel to generation actors through the object store (actors/adapter_fetch.py), so the
  nodes share no file system
- generation: `GenerationPool.submit(requests)` (least-loaded actor, model resident)
- judging: `JudgePool.submit_batch(candidates)` (sandboxed, problems `ray.put` once)
Every actor is created with `max_restarts` / `max_task_retries` from `cfg.ray`, so a killed
actor is restarted and the tasks it held are re-run by Ray: the engine simply receives the
result later. The cap on work in flight (`cfg.ray.max_in_flight`) is applied by the engine.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any, Optional, Sequence

import ray

from coral.config import Config
from coral.search.genome import HeavyGenes
from coral.messages import Candidate, GenerationRequest
from coral.judge.quixbugs import Problem

log = logging.getLogger(__name__)


def check_resources(cfg: Config) -> None:
    """Fail fast when the pools cannot all be placed (they would wait forever otherwise)."""
    pools = (cfg.ray.training_pool, cfg.ray.generation_pool, cfg.ray.judge_pool)
    need = {"CPU": sum(p.size * p.num_cpus for p in pools),
            "GPU": sum(p.size * p.num_gpus for p in pools)}
    have = ray.cluster_resources()
    short = [f"{need[r]:g} {r}s (cluster has {have.get(r, 0):g})" for r in need
             if need[r] > have.get(r, 0) + 1e-9]
    if not short:
        return
    msg = (f"the pools (ray.training_pool, ray.generation_pool, ray.judge_pool: size x "
           f"num_cpus/num_gpus) need {' and '.join(short)}")
    if cfg.ray.address is None:
        raise RuntimeError(msg + "; shrink the pools or raise ray.num_cpus")
    log.warning("%s; waiting for the autoscaler to add nodes", msg)


class RayPools:
    """`coral.run.pools.Pools` backed by Ray actor pools built from the config."""

    def __init__(self, cfg: Config, problems: Sequence[Problem]) -> None:
        from actors.adapter_fetch import ObjectStoreAdapters
        from actors.cache_actor import make_cache
        from actors.generation_pool import GenerationPool
        from actors.judge_pool import JudgePool
        from actors.metrics import QueueDepth
        from actors.training_pool import TrainingPool

        self.cfg = cfg
        self.queues = QueueDepth()
        check_resources(cfg)
        # Unique names: several runs (or tests) may share one cluster and namespace.
        prefix = f"coral-{uuid.uuid4().hex[:8]}"
        self.judge_pool = JudgePool(cfg, tuple(problems))
        self.problems = self.judge_pool.problems        # calibrated once for the pool
        store = cfg.storage
        self.generation_pool = GenerationPool(cfg, ObjectStoreAdapters(
            f"{prefix}-cache", store.local_max_adapters, store.local_adapters))
        self.training_pool = TrainingPool(cfg, name_prefix=f"{prefix}-train")
        self.cache = make_cache(cfg, self.training_pool, name=f"{prefix}-cache")
        log.info("pools: training %d, generation %d, test %d actor(s)",
                 cfg.ray.training_pool.size, cfg.ray.generation_pool.size,
                 cfg.ray.judge_pool.size)

    def submit_adapter(self, key: str, genes: HeavyGenes) -> Any:
        """ObjectRef of an AdapterReady for `key`."""
        return self.queues.sent(self.cache.get_ready.remote(key, genes), "training")

    def submit_generate(self, requests: Sequence[GenerationRequest]) -> Any:
        """ObjectRef of the generation results of a batch."""
        return self.queues.sent(self.generation_pool.submit(list(requests)), "generation")

    def submit_judge(self, candidates: Sequence[Candidate]) -> Any:
        """ObjectRef of the outcomes of a batch (one test actor)."""
        return self.queues.sent(self.judge_pool.submit_batch(list(candidates)), "judge")

    def wait(self, handles: Sequence[Any], num_returns: int = 1,
             timeout: Optional[float] = None) -> tuple[list, list]:
        """`ray.wait` over the handles."""
        ready, pending = ray.wait(list(handles), num_returns=min(num_returns, len(handles)),
                                  timeout=timeout)
        self.queues.update(pending)   # queue depth per pool for the Ray dashboard
        return ready, pending

    def get(self, handle: Any) -> Any:
        """`ray.get` of one finished handle."""
        return ray.get(handle)

    def cache_stats(self) -> dict:
        """Counters of the cache actor."""
        return dict(ray.get(self.cache.stats.remote()))

    def close(self) -> None:
        """Kill the pools' actors."""
        ray.kill(self.cache)
        for pool in (self.judge_pool, self.generation_pool, self.training_pool):
            pool.close()
