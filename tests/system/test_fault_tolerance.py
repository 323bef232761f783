"""A generation actor and a test actor killed mid-run: Ray restarts them and re-runs their
tasks, and the run ends with every score present and equal to an undisturbed run's."""

from __future__ import annotations

import time

import ray

from cluster.driver import run
from cluster.ray_pools import RayPools
from coral.run.engine import problems_for
from coral.run.rundir import RunDir

OVERRIDES = ["dataset.problems=[gcd, bitcount, flatten]", "dataset.held_out_fraction=0.34",
             "search.population_size=3", "search.generations=2", "run.held_out_eval=false",
             "search.genes.steps=[2]", "training.examples=8", "knobs.max_new_tokens=12",
             # every genome trains and samples n answers: the counts below
             "search.seed_population=false", "knobs.greedy_fraction=0", "search.evaluation=fixed"]


class KillingPools(RayPools):
    """RayPools that kill (with restart) the generation actor and a test actor while the
    first batch of each kind is being worked on."""

    killed: dict

    def submit_generate(self, requests):
        ref = super().submit_generate(requests)
        if "generate" not in self.killed:
            actor = self.generation_pool.actors[0]
            self.killed["generate"] = ray.get(actor.pid.remote())
            ray.wait([ref], timeout=0.5)  # let it start working
            ray.kill(actor, no_restart=False)
        return ref

    def submit_judge(self, candidates):
        ref = super().submit_judge(candidates)
        if "judge" not in self.killed:
            self.killed["judge"] = True
            time.sleep(0.05)
            for actor in self.judge_pool.actors:
                ray.kill(actor, no_restart=False)
        return ref


def test_killed_actors_lose_nothing(smoke_config, ray_local):
    def cfg(name):
        return smoke_config(name, *OVERRIDES)

    calm = RunDir(run(cfg("calm"), resume=False, quiet=True, in_process=True, report=False))
    c = cfg("killed")
    train, held = problems_for(c)
    pools = KillingPools(c, (*train, *held))
    pools.killed = {}
    try:
        rd = RunDir(run(c, resume=False, quiet=True, report=False, pools=pools))
        new_pid = ray.get(pools.generation_pool.actors[0].pid.remote())
    finally:
        pools.close()
    assert set(pools.killed) == {"generate", "judge"}
    assert new_pid != pools.killed["generate"]          # the actor really was restarted

    def scores(run_dir):
        ck = run_dir.load_checkpoint()
        return ({g: (r["scores"], r["fixed"]) for g, r in ck["genomes"].items()},
                [(p["genome"]["id"], p["scores"]) for p in ck["evolution"]["population"]])
    assert scores(rd) == scores(calm)
    judged = [(e["phase"], e["generation"], e["genome_id"], e["problem"], e["sample"])
              for e in rd.events() if e["event"] == "candidate_judged"]
    assert len(judged) == len(set(judged)) == (2 * 3 * 2 + 3 * 2) * 2   # search + final
