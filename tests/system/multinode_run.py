"""The smoke run on a real 4-node Ray cluster on this machine; prints what happened as JSON.

Run by tests/system/test_multinode.py in its own process (the test session's Ray cannot be
re-initialised for another cluster):

    python tests/system/multinode_run.py WORKDIR QUIXBUGS

Nodes: a head (the driver, the CacheActor and the persistent store; 1 CPU, no GPU) and three
workers with one (fake) GPU each. Training and generation actors each take a whole GPU, so
they never share a node, and the third worker is spare. Every generation actor keeps its own
directory under WORKDIR/local; the store is WORKDIR/store; nothing else is shared. When the
first generation batch is under way, the generation actor's node is removed: its actor is
restarted on the spare node, which has trained nothing and fetches again.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import ray  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402

from cluster.driver import run  # noqa: E402
from cluster.ray_pools import RayPools  # noqa: E402
from coral import config as cfgmod  # noqa: E402
from coral.run.engine import problems_for  # noqa: E402
from coral.run.rundir import RunDir  # noqa: E402

MB = 1024 * 1024
# Dead nodes are noticed in ~2 s instead of ~30 s.
FAST_FAILURE = {"health_check_period_ms": 500, "health_check_failure_threshold": 3,
                "health_check_initial_delay_ms": 0}


class NodeRemovingPools(RayPools):
    """RayPools that remove the generation actor's node while its first batch runs."""

    cluster: Cluster
    removed: dict

    def submit_generate(self, requests):
        if self.removed:
            return super().submit_generate(requests)
        actor = self.generation_pool.actors[0]
        node = ray.get(actor.stats.remote())["node"]
        ref = super().submit_generate(requests)
        ray.wait([ref], timeout=1.0)                 # let it start (and fetch its adapter)
        victim = next(n for n in self.cluster.worker_nodes if n.node_id == node)
        self.cluster.remove_node(victim, allow_graceful=False)
        self.removed.update(node=node, at=time.time())
        return ref


def main(workdir: str, quixbugs: str) -> dict:
    """Build the cluster, run, collect the evidence, tear the cluster down."""
    work = Path(workdir)
    temp = tempfile.mkdtemp(prefix="crmn")         # short: Ray's socket paths have a cap
    head = {"num_cpus": 1, "num_gpus": 0, "object_store_memory": 80 * MB, "temp_dir": temp,
            "include_dashboard": False, "_system_config": FAST_FAILURE}
    cluster = Cluster(initialize_head=True, head_node_args=head)
    try:
        for _ in range(3):
            cluster.add_node(num_cpus=1, num_gpus=1, object_store_memory=80 * MB,
                             temp_dir=temp)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False,
                 runtime_env={"env_vars": {"CORAL_QUIXBUGS": quixbugs}})
        return _run(cluster, work, quixbugs)
    finally:
        ray.shutdown()
        cluster.shutdown()


def _run(cluster: Cluster, work: Path, quixbugs: str) -> dict:
    """One smoke run through cluster.driver.run with NodeRemovingPools; the evidence."""
    cfg = cfgmod.load(REPO / "configs" / "smoke.yaml", [
        f"dataset.quixbugs={quixbugs}", f"run.runs_dir={work / 'runs'}", "run.name=multinode",
        f"storage.adapters={work / 'store'}", f"storage.local_adapters={work / 'local'}",
        "ray.training_pool.num_gpus=1", "ray.generation_pool.num_gpus=1",
        "run.held_out_eval=false",
        # every genome trains and samples n answers: what expected_judged counts
        "search.genes.steps=[3]", "search.seed_population=false", "knobs.greedy_fraction=0",
        "search.evaluation=fixed"])
    train, held = problems_for(cfg)
    pools = NodeRemovingPools(cfg, (*train, *held))
    pools.cluster, pools.removed = cluster, {}
    t0 = time.time()
    try:
        rd = RunDir(run(cfg, resume=False, quiet=True, report=False, pools=pools))
        generator = ray.get(pools.generation_pool.actors[0].stats.remote())
        trainer = ray.get(pools.training_pool.actors[0].stats.remote())
        cache = ray.get(pools.cache.stats.remote())
        cache_node = ray.get(pools.cache.__ray_call__.remote(
            lambda self: ray.get_runtime_context().get_node_id()))
    finally:
        pools.close()
    events = rd.events()
    return {
        "seconds": round(time.time() - t0, 1),
        "ended": bool(events) and events[-1]["event"] == "run_ended",
        "judged": [(e["phase"], e["generation"], e["genome_id"], e["problem"], e["sample"])
                   for e in events if e["event"] == "candidate_judged"],
        "trained_keys": [e["key"] for e in events
                         if e["event"] == "adapter_ready" and e["outcome"] == "trained"],
        # every (genome, train problem, sample) of the search, then the final re-evaluation
        "expected_judged": (cfg.search.generations * cfg.search.population_size
                            + min(cfg.search.reevaluate_top, cfg.search.population_size))
        * len(train) * cfg.search.samples_per_problem,
        "removed": pools.removed, "generator": generator, "trainer": trainer, "cache": cache,
        "cache_node": cache_node, "head_node": cluster.head_node.node_id,
        "store": str(work / "store"),
        "alive_nodes": [n["NodeID"] for n in ray.nodes() if n["Alive"]] if ray.is_initialized()
        else [],
    }


if __name__ == "__main__":
    print("RESULT " + json.dumps(main(sys.argv[1], sys.argv[2])))
