"""`coral compare` on the smoke config, in-process: a half-done compare directory (one arm
killed mid-run) resumes what is missing and nothing else; the summary meets the schema."""

from __future__ import annotations

import json

import pytest

from cluster.driver import open_pools, run
from coral.config import ConfigError
from coral.run.compare import (check_plan, check_request, compare_path, plan, replicate_seed,
                               run_compare, summarise)
from coral.run.compare_report import json_line
from coral.run.engine import problems_for
from coral.run.rundir import read_events

STRATEGIES = ("nsga2", "random")
SMALL = ("search.population_size=2", "run.held_out_top_k=1", "dataset.max_train_problems=2",
         "search.reevaluate_top=1",
         # every genome trains and samples n answers, so the sample counts below are exact
         "search.genes.steps=[3]", "search.seed_population=false", "knobs.greedy_fraction=0",
         "search.evaluation=fixed")
# 2 genomes x 2 problems x 2 samples = 8 samples a generation: the budget ends every run after
# two generations, before search.generations (3) would.
BUDGET = ("search.generations=3", "search.budget.samples=16")


class KilledPools:
    """The real pools, except that the n-th judging submission dies (a driver killed mid-run)."""

    def __init__(self, pools, die_at: int) -> None:
        self._pools, self._left = pools, die_at

    def __getattr__(self, name):
        return getattr(self._pools, name)

    def submit_judge(self, candidates):
        self._left -= 1
        if self._left == 0:
            raise RuntimeError("driver killed")
        return self._pools.submit_judge(candidates)


def test_replicate_seeds_are_shared_by_strategies_and_differ_between_replicates(
        smoke_config):
    arms = plan(smoke_config("smoke"), STRATEGIES, 2)
    assert [a.name for a in arms] == ["nsga2-r0", "random-r0", "nsga2-r1", "random-r1"]
    assert arms[0].seed == arms[1].seed == replicate_seed(0, 0) != arms[2].seed
    assert arms[1].cfg.search.strategy == "random" and arms[1].cfg.run.seed == arms[1].seed
    assert all(a.path.parent == compare_path(smoke_config("smoke")) for a in arms)


def test_a_comparison_that_could_say_nothing_is_refused_before_compute(smoke_config):
    """No replicate, a strategy twice (no pair), an unknown strategy, or nothing held out:
    each is a config error naming the fix, raised before a pool starts or a job is sent."""
    cfg = smoke_config("smoke")
    check_request(cfg, STRATEGIES, 1)
    for strategies, replicates, match in [(STRATEGIES, 0, "--replicates"),
                                          (("nsga2", "nsga2"), 2, "distinct"),
                                          (("nsga2", "annealing"), 2, "annealing")]:
        with pytest.raises(ConfigError, match=match):
            check_request(cfg, strategies, replicates)
    with pytest.raises(ConfigError, match="held_out_fraction > 0"):
        check_request(smoke_config("smoke", "dataset.held_out_fraction=0"), STRATEGIES, 1)
    with pytest.raises(ConfigError, match="no held-out problem"):
        check_plan(cfg, STRATEGIES, 1, held_out=())


def test_half_done_compare_resumes_only_what_is_missing(smoke_config):
    cfg = smoke_config("smoke", *SMALL, *BUDGET)
    train, held = problems_for(cfg)
    root = compare_path(cfg)
    ran: list[str] = []

    def run_arm(arm_cfg, pools, kill=False):
        ran.append(arm_cfg.run.name)
        if kill and arm_cfg.run.name == "nsga2-r1":
            pools = KilledPools(pools, die_at=3)  # a judge batch per genome: in gen 1
        return run(arm_cfg, pools=pools, quiet=True)

    with open_pools(cfg, (*train, *held), in_process=True) as pools:
        with pytest.raises(RuntimeError, match="driver killed"):
            run_compare(cfg, STRATEGIES, 2, pools, lambda c, p: run_arm(c, p, True), held)
        assert ran == ["nsga2-r0", "random-r0", "nsga2-r1"]
        half = [e["event"] for e in read_events(root / "nsga2-r1")]
        assert "generation_summary" in half and half[-1] != "run_ended"
        assert not (root / "random-r1").exists()
        partial = summarise(root)                         # a half-done compare already reads
        assert partial["replicates"] == 1 and partial["arms"]["nsga2"]["samples_used"] == [16]
        assert partial["runs"]["nsga2-r1"] == {"state": "started", "samples_used": 8}
        assert partial["runs"]["random-r1"]["state"] == "not started"
        assert partial["baselines"]["unchanged"] == 0.0   # measured with replicate 0's pair
        before = {n: (root / n / "events.jsonl").read_text() for n in ("nsga2-r0", "random-r0")}

        ran.clear()
        doc = run_compare(cfg, STRATEGIES, 2, pools, run_arm, held)
        assert ran == ["nsga2-r1", "random-r1"]          # finished arms are not run again
        assert {n: (root / n / "events.jsonl").read_text() for n in before} == before
        resumed = list(read_events(root / "nsga2-r1"))
        assert sum(e["event"] == "run_started" for e in resumed) == 2

        baselines = (root / "baselines.json").stat().st_mtime_ns
        ran.clear()
        again = run_compare(cfg, STRATEGIES, 2, pools, run_arm, held)
        assert ran == [] and again == doc                 # nothing left to do
        assert (root / "baselines.json").stat().st_mtime_ns == baselines

    # Equal budget: every replicate of every arm stopped at the budget with the same number
    # of search samples judged, and the killed-and-resumed arm counted none twice.
    for s in STRATEGIES:
        assert doc["arms"][s]["samples_used"] == [16, 16]
    for name in ("nsga2-r0", "random-r1", "nsga2-r1"):
        events = list(read_events(root / name))
        assert [e["reason"] for e in events if e["event"] == "budget_spent"] == [
            "budget spent: samples 16 of 16"]
        assert events[-1]["event"] == "run_ended" and events[-1]["generations"] == 2
    assert doc["budget_samples"] == 16
    line = json.loads(json_line(doc))
    assert set(line) >= {"arms", "baselines", "paired_difference", "replicates",
                         "budget_samples"}
    for arm in line["arms"].values():
        assert set(arm) >= {"heldout_pass_at_k_mean", "heldout_pass_at_k_ci95",
                            "heldout_fixed_mean", "samples_used", "vs_baselines",
                            "adapter_gain", "best_train_pass_at_k"}
        # paired per replicate against the untuned model (same problems, same seeds)
        assert set(arm["vs_baselines"]) == {"greedy_base", "default_knobs"}
        for vs in arm["vs_baselines"].values():
            assert vs["n"] == 2 and vs["ci95"][0] <= vs["mean"] <= vs["ci95"][1]
        assert len(arm["adapter_gain"]) == 2 and all(g is not None for g in arm["adapter_gain"])
        lo, hi = arm["heldout_pass_at_k_ci95"]
        assert 0.0 <= lo <= arm["heldout_pass_at_k_mean"] <= hi <= 1.0
    assert set(line["baselines"]) == {"unchanged", "greedy_base", "default_knobs"}
    assert line["baselines"]["unchanged"] == 0.0  # the buggy program fixes nothing
    assert set(line["paired_difference"]) >= {"mean", "ci95"}
    assert line["replicates"] == 2
    for name in ("compare.md", "compare.png", "curves.png", "plan.json"):
        assert (root / name).exists()
    md = (root / "compare.md").read_text()
    assert "no detectable difference" in md or "better" in md
    # compare.md opens with one sentence: beats the untuned model, or not, at this budget
    opening = md.split("\n")[2]
    assert opening.startswith("At 16 samples: nsga2 ") and "untuned model" in opening
