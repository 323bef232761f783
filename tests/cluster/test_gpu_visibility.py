"""Actors without GPUs see none: Ray 2.60 no longer empties CUDA_VISIBLE_DEVICES for
num_gpus=0 actors, so actors.pool.actor_options does it (with model.device auto, every model
actor would otherwise land on GPU 0 next to those that reserved it).

Run on a private Ray in its own interpreter whose processes inherit CUDA_VISIBLE_DEVICES=0, as
on a GPU node: an actor created with plain options sees "0" (what Ray does by itself), one
created with the pool's options sees "".
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

SCRIPT = """
import json, os, ray
from actors.pool import actor_options
from coral.config import Config, PoolConfig

class Probe:
    def visible(self):
        return os.environ.get("CUDA_VISIBLE_DEVICES")

ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, log_to_driver=False)
try:
    cls = ray.remote(Probe)
    cpu_pool = actor_options(Config(), PoolConfig(size=1, num_cpus=0.5, num_gpus=0))
    pooled = cls.options(**cpu_pool).remote()
    plain = cls.options(num_cpus=0.5, num_gpus=0).remote()
    print(json.dumps({"pooled": ray.get(pooled.visible.remote()),
                      "plain": ray.get(plain.visible.remote())}))
finally:
    ray.shutdown()
"""


def test_an_actor_without_gpus_sees_none():
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="0", PYTHONPATH=str(REPO),
               RAY_AUTH_MODE="disabled")
    env.pop("RAY_ADDRESS", None)
    out = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["plain"] == "0", seen        # Ray itself leaves the GPU visible
    assert seen["pooled"] == "", seen


def test_gpu_pools_keep_their_gpus():
    """Only actors without GPUs are hidden: a GPU pool's options leave the device to Ray."""
    from actors.pool import actor_options
    from coral.config import Config, PoolConfig

    assert "runtime_env" not in actor_options(Config(), PoolConfig(num_gpus=0.5))
    assert actor_options(Config(), PoolConfig(num_gpus=0))["runtime_env"] == {
        "env_vars": {"CUDA_VISIBLE_DEVICES": ""}}
