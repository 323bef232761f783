"""Connecting the driver to Ray: a local `ray.init` on a laptop, or joining a cluster.

`ray.address` in the config decides: null starts a private local Ray with
`ray.num_cpus` CPUs (GPUs are detected), watched by cluster/reaper.py so that none of its
processes outlives the driver; "auto" joins the cluster this process runs in (what a
Ray job's driver does); "ray://host:10001" or "host:6379" joins that cluster. When Ray is
already initialised in this process (tests, notebooks), it is used as is.
"""

from __future__ import annotations

import logging
import os

import ray

from coral.config import RayConfig

log = logging.getLogger(__name__)

# What the driver hands every Ray worker it starts (from its own environment), so workers on
# any node find the data and model caches and can download a gated model. Compare
# cluster.jobs.SUBMIT_ENV: what `coral submit` copies from your shell to the job's driver.
WORKER_ENV = ("CORAL_QUIXBUGS", "CORAL_CACHE", "HF_TOKEN", "HF_HOME")


def worker_env() -> dict:
    """The WORKER_ENV variables set in this process (forwarded to Ray workers)."""
    return {k: os.environ[k] for k in WORKER_ENV if k in os.environ}


def connect(ray_cfg: RayConfig) -> bool:
    """Make sure Ray is initialised per the config; True when this call started it."""
    if ray.is_initialized():
        log.info("using the Ray already initialised in this process")
        return False
    runtime_env = {"env_vars": worker_env()}
    # Ray's own notices and the workers' output go to run.log, not the console.
    from cluster.observe import route_driver_logs, route_worker_output
    route_driver_logs()
    if ray_cfg.address is None:
        # A private Ray: its processes are marked and killed once this process is gone,
        # however it ends (cluster/reaper.py).
        from cluster.reaper import start_reaper
        start_reaper()
        ray.init(num_cpus=ray_cfg.num_cpus, include_dashboard=False, log_to_driver=True,
                 runtime_env=runtime_env)
        log.info("started local Ray: %s", ray.cluster_resources())
    else:
        ray.init(address=ray_cfg.address, runtime_env=runtime_env)
        log.info("joined Ray at %s: %s", ray_cfg.address, ray.cluster_resources())
    route_worker_output()
    return True


def disconnect(started: bool) -> None:
    """Shut Ray down if `connect` started it."""
    if started and ray.is_initialized():
        ray.shutdown()
    if started:
        from cluster.reaper import TOKEN_VAR
        os.environ.pop(TOKEN_VAR, None)   # later children are not this Ray's
