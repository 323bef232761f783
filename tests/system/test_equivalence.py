"""The same seed gives the same final population with in-process pools and with Ray actors."""

from __future__ import annotations

from cluster.driver import run
from coral.run.rundir import RunDir

OVERRIDES = ["dataset.problems=[gcd, bitcount, flatten]", "dataset.held_out_fraction=0.34",
             "search.population_size=3", "search.generations=2", "run.held_out_top_k=1",
             "search.genes.steps=[0, 2]", "training.examples=8", "knobs.max_new_tokens=12"]


def final_state(rd: RunDir) -> tuple:
    """Survivors with vectors, every genome's scores/fixes/adapter, the RNG, held-out scores."""
    ck = rd.load_checkpoint()
    pop = [(p["genome"], p["scores"]) for p in ck["evolution"]["population"]]
    genomes = {g: (r["scores"], r["fixed"], r["key"], r["knobs"]) for g, r in ck["genomes"].items()}
    held = [(g["id"], g["scores"]) for g in rd.read_json("heldout.json")["genomes"]]
    return pop, genomes, ck["evolution"]["rng"], held


def test_in_process_and_ray_give_the_same_run(smoke_config, ray_local):
    def cfg(name):
        # Separate adapter stores: the adapters are trained once in each mode too.
        return smoke_config(name, *OVERRIDES, adapters=f"adapters-{name}")

    local = RunDir(run(cfg("local"), resume=False, quiet=True, in_process=True, report=False))
    remote = RunDir(run(cfg("ray"), resume=False, quiet=True, report=False))
    assert final_state(local) == final_state(remote)
    judged = [[(e["genome_id"], e["problem"], e["sample"], e["status"], e["scores"], e["code"])
               for e in sorted((e for e in rd.events() if e["event"] == "candidate_judged"),
                               key=lambda e: (e["phase"], e["genome_id"], e["problem"],
                                              e["sample"]))]
              for rd in (local, remote)]
    # Racing and greedy genomes make the count depend on the search itself: every answer the
    # model wrote (search, final re-evaluation, held-out) was judged, the same in both modes.
    written = [sum(e["requests"] for e in rd.events() if e["event"] == "genome_generated")
               for rd in (local, remote)]
    assert judged[0] == judged[1] and written[0] == written[1] == len(judged[0]) > 0
