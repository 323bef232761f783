"""A fixed set of identical actors with least-loaded dispatch: what each pool is built on.

Actors get their resources and fault-tolerance options from the config's pool section, so a
killed actor is restarted by Ray (`max_restarts`) and its unfinished calls are re-run
(`max_task_retries`). Constructor arguments are passed inline (they are small: the config and
paths): Ray must be able to run the constructor again on restart.
"""

from __future__ import annotations

from typing import Any, Optional

import ray

from coral.config import Config, PoolConfig


def actor_options(cfg: Config, pool: PoolConfig) -> dict:
    """Ray options of one pool's actors: resources and fault tolerance from the config.

    An actor without GPUs gets CUDA_VISIBLE_DEVICES empty: Ray (2.60) no longer hides the
    node's GPUs from num_gpus=0 actors, so with model.device auto every such actor would load
    its model onto GPU 0, next to the actors that reserved it. (env_vars merge with the job's.)
    """
    options = {"num_cpus": pool.num_cpus, "num_gpus": pool.num_gpus,
               "max_restarts": cfg.ray.max_restarts,
               "max_task_retries": cfg.ray.max_task_retries}
    if pool.num_gpus == 0:
        options["runtime_env"] = {"env_vars": {"CUDA_VISIBLE_DEVICES": ""}}
    return options


class LeastLoaded:
    """`pool.size` actors of `worker_cls`; `call` sends a method call to the least loaded one."""

    def __init__(self, worker_cls: type, cfg: Config, pool: PoolConfig, *args: Any,
                 name_prefix: Optional[str] = None, max_concurrency: int = 1) -> None:
        actor_cls = ray.remote(worker_cls)
        # max_concurrency > 1: a threaded actor, whose calls may block on one another.
        options = dict(actor_options(cfg, pool), max_concurrency=max_concurrency)
        # Named actors (`<prefix>-<i>`) can be looked up by other actors, which then need
        # no handles in their constructor arguments (those would not survive a restart).
        self.names = [f"{name_prefix}-{i}" for i in range(pool.size)] if name_prefix else []
        self.actors = [actor_cls.options(**options, **({"name": self.names[i]} if self.names
                                                       else {})).remote(*args)
                       for i in range(pool.size)]
        self._in_flight: list[list["ray.ObjectRef"]] = [[] for _ in self.actors]

    def _least_loaded(self) -> int:
        """Index of the actor with the fewest unfinished calls (lowest index on ties)."""
        for i, refs in enumerate(self._in_flight):
            if refs:
                _, pending = ray.wait(refs, num_returns=len(refs), timeout=0)
                self._in_flight[i] = pending
        return min(range(len(self.actors)), key=lambda i: len(self._in_flight[i]))

    def call(self, method: str, *args: Any) -> "ray.ObjectRef":
        """Call `method(*args)` on the least-loaded actor; the ObjectRef of its result."""
        i = self._least_loaded()
        ref = getattr(self.actors[i], method).remote(*args)
        self._in_flight[i].append(ref)
        return ref

    def close(self) -> None:
        """Kill the actors for good (their models go with them)."""
        for actor in self.actors:
            ray.kill(actor, no_restart=True)
        self.actors, self._in_flight = [], []
