"""The engine at its defaults on the tiny model: the untuned model seeded, racing, no-adapter
genomes that train nothing, greedy decoding, and the held-out check against the untuned
model and against the pick without its adapter."""

from __future__ import annotations

import dataclasses
import json

import pytest

from coral import config as cfgmod
from coral.messages import CheapKnobs, GenerationRequest
from coral.search.baselines import role_of
from coral.search.genome import genome_from_dict

from tests.run.test_engine import engine_config, make_engine, open_pools

# configs/smoke.yaml shrunk, at the search's defaults (seeded, racing, greedy region)
SMALL = ("dataset.problems=[gcd, bitcount, flatten]", "dataset.held_out_fraction=0.34",
         "search.population_size=4", "search.generations=2", "run.held_out_top_k=1",
         "search.reevaluate_top=2", "knobs.max_new_tokens=12", "training.examples=8",
         "search.samples_per_problem=4")


@pytest.fixture(scope="module")
def pools(tmp_path_factory, quixbugs_dir):
    """The same in-process pools (tiny model, sandbox) as the plain engine tests."""
    yield from open_pools(tmp_path_factory, quixbugs_dir)


def default_config(tmp_path, quixbugs_dir, *extra: str) -> cfgmod.Config:
    return engine_config(tmp_path, quixbugs_dir, *extra, base=SMALL)


def test_no_adapter_genomes_cause_no_training_call(tmp_path, quixbugs_dir, pools):
    cfg = default_config(tmp_path, quixbugs_dir, "search.genes.steps=[0]")
    before = pools.cache_stats()
    rd = make_engine(cfg, pools).run(resume=False)
    events = rd.events()
    assert not [e for e in events if e["event"] == "adapter_ready"]
    assert pools.cache_stats() == before                     # no lookup, no training
    ck = rd.load_checkpoint()
    assert all(r["key"] is None for r in ck["genomes"].values())
    held = rd.read_json("heldout.json")
    assert held["adapter_gain"]["has_adapter"] is False and held["adapter_gain"]["gain"] == 0
    # the untuned model at greedy decoding is decoded once on the held-out problems, also
    # when it is the pick (same adapter, knobs and seeds: the same answers)
    pick = held["genomes"][0]
    decoded = {e["genome_id"] for e in events
               if e["event"] == "candidate_judged" and e["phase"] == "heldout"}
    if role_of(genome_from_dict(ck["genomes"][pick["id"]]["genome"]), cfg.search) == "greedy_base":
        assert decoded == {pick["id"]}
        assert held["untuned_greedy"]["scores"] == pick["scores"]
    else:
        assert decoded == {pick["id"], "untuned-greedy"}


def test_default_search_seeds_races_and_checks_against_the_untuned_model(
        tmp_path, quixbugs_dir, pools, capsys):
    cfg = default_config(tmp_path, quixbugs_dir, "search.genes.steps=[0, 2]")
    assert cfg.search.evaluation == "racing" and cfg.search.seed_population
    rd = make_engine(cfg, pools).run(resume=False)
    events = rd.events()
    ck = rd.load_checkpoint()
    recs = ck["genomes"]
    roles = {role_of(genome_from_dict(r["genome"]), cfg.search): gid for gid, r in recs.items()}
    greedy = recs[roles["greedy_base"]]
    assert roles["greedy_base"].startswith("g000-") and roles["default_knobs"].startswith("g000-")
    assert greedy["samples_per_problem"] == 1 and greedy["knobs"]["top_k"] == 1
    # racing: every genome's n is recorded; the samples judged are exactly those n
    scored = [e for e in events if e["event"] == "genome_scored"]
    assert {e["id"] for e in scored} == set(recs)
    judged = [e for e in events if e["event"] == "candidate_judged" and e["phase"] == "search"]
    train = len(events[0]["train_problems"])
    assert len(judged) == sum(e["samples_per_problem"] for e in scored) * train
    assert {e["samples_per_problem"] for e in scored} >= {1, 4}
    # the search's best train score is never below the untuned greedy model's (seeded)
    assert max(r["scores"]["fixed"] for r in recs.values()) >= greedy["scores"]["fixed"]
    held = rd.read_json("heldout.json")
    assert set(held) >= {"untuned_greedy", "adapter_gain"}
    assert held["untuned_greedy"]["id"] == "untuned-greedy"
    gain = held["adapter_gain"]
    assert gain["gain"] == pytest.approx(gain["with_adapter"] - gain["without_adapter"])
    best = rd.read_json("best.json")
    assert best["pooled"] is not None and gain["id"] == best["id"]
    from coral.cli import main

    assert main(["status", str(rd.path), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["history"][0]["samples_per_problem"][roles["greedy_base"]] == 1
    assert summary["heldout"]["untuned_greedy_fixed"] is not None
    assert main(["status", str(rd.path)]) == 0
    assert "n/genome 1," in capsys.readouterr().out


def test_greedy_knobs_give_the_same_text_for_every_seed():
    from coral.config import Config, ModelConfig
    from coral.model.generation import Generator
    from coral.search.baselines import untuned_knobs

    cfg = dataclasses.replace(Config(), model=ModelConfig(base="tiny"))
    knobs = untuned_knobs(cfg.search, dataclasses.replace(cfg.knobs, max_new_tokens=12))
    src = "def gcd(a, b):\n    if b == 0:\n        return a\n    return gcd(a % b, b)\n"

    def text(k: CheapKnobs, seed: int) -> str:
        gen = Generator(cfg)
        req = GenerationRequest(f"r{seed}", "g", "gcd", src, None, k, seed)
        return gen.generate([req])[0].text

    assert knobs["greedy_base"].greedy
    assert text(knobs["greedy_base"], 1) == text(knobs["greedy_base"], 2)
    sampled = dataclasses.replace(knobs["default_knobs"], temperature=1.5, top_k=1000,
                                  top_p=1.0)
    assert len({text(sampled, s) for s in (1, 2, 3)}) > 1      # the seed matters when sampling


@pytest.mark.parametrize("evaluation", ["racing", "fixed"])
def test_a_sample_budget_is_spent_exactly_in_either_evaluation(
        tmp_path, quixbugs_dir, pools, evaluation):
    """30 samples, 2 train problems, 4 genomes: racing and fixed both stop at exactly 30 (the
    last generation's rest goes to its best genomes), so arms compare at equal samples."""
    cfg = default_config(tmp_path, quixbugs_dir, "search.generations=10",
                         "search.budget.samples=30", f"search.evaluation={evaluation}",
                         "run.held_out_eval=false", "search.genes.steps=[0]")
    rd = make_engine(cfg, pools, name=f"budget-{evaluation}").run(resume=False)
    events = rd.events()
    judged = [e for e in events if e["event"] == "candidate_judged" and e["phase"] == "search"]
    assert len(judged) == 30
    assert [e for e in events if e["event"] == "budget_spent"]
    assert len({(e["genome_id"], e["problem"], e["sample"]) for e in judged}) == 30
    scored = [e for e in events if e["event"] == "genome_scored"]
    assert sum(e["samples"] for e in scored) == 30


def test_a_budget_below_one_generation_is_a_config_error(tmp_path, quixbugs_dir, pools):
    cfg = default_config(tmp_path, quixbugs_dir, "search.budget.samples=5")
    with pytest.raises(cfgmod.ConfigError, match="less than one generation's first round"):
        make_engine(cfg, pools, name="tiny-budget").run(resume=False)
