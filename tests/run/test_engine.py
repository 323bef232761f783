"""Engine with in-process pools: a whole tiny run, its run directory, resume rules, report."""

from __future__ import annotations

import json

import pytest

from coral import config as cfgmod
from coral.run.engine import Engine, ResumeRefused, problems_for, request_seed
from coral.messages import Scores
from coral.run.rundir import RunDir

ENGINE_OVERRIDES = [
    "dataset.problems=[gcd, bitcount, flatten]", "dataset.held_out_fraction=0.34",
    "search.population_size=3", "search.generations=2", "run.held_out_top_k=2",
    "knobs.max_new_tokens=[8, 16]", "training.steps=2", "training.examples=8",
]


def engine_config(tmp_path, quixbugs_dir, *extra: str) -> cfgmod.Config:
    """configs/smoke.yaml shrunk for tests, with run dir and adapter store under tmp_path."""
    return cfgmod.load("configs/smoke.yaml", [
        f"dataset.quixbugs={quixbugs_dir}", f"run.runs_dir={tmp_path}/runs",
        f"storage.adapters={tmp_path}/adapters", *ENGINE_OVERRIDES, *extra])


@pytest.fixture(scope="module")
def pools(tmp_path_factory, quixbugs_dir):
    """In-process pools (tiny model, real training, real sandbox), shared by the module."""
    from coral.run.pools import in_process_pools

    cfg = engine_config(tmp_path_factory.mktemp("w"), quixbugs_dir)
    train, held = problems_for(cfg)
    w = in_process_pools(cfg, (*train, *held))
    yield w
    w.close()


def make_engine(cfg, pools, name=None) -> Engine:
    """An engine for cfg in its run directory."""
    from coral.model.loading import resolve
    from coral.model.training import data_version

    train, held = problems_for(cfg)
    rd = RunDir(f"{cfg.run.runs_dir}/{name or cfg.run.name}")
    return Engine(cfg, pools, rd, train, held, resolve(cfg.model).name,
                  data_version(cfg.training))


@pytest.fixture(scope="module")
def finished(tmp_path_factory, quixbugs_dir, pools):
    """One finished in-process run (config, run dir)."""
    cfg = engine_config(tmp_path_factory.mktemp("run"), quixbugs_dir)
    rd = make_engine(cfg, pools).run(resume=False)
    return cfg, rd


def test_request_seed_is_stable_and_distinct():
    assert request_seed(0, "g000-000-x", "gcd") == request_seed(0, "g000-000-x", "gcd")
    seeds = {request_seed(s, g, p) for s in (0, 1) for g in ("a", "b") for p in ("gcd", "hanoi")}
    assert len(seeds) == 8
    assert all(0 <= s < 2 ** 31 for s in seeds)


def test_run_scores_every_genome_on_every_problem(finished):
    cfg, rd = finished
    events = rd.events()
    kinds = [e["event"] for e in events]
    assert kinds[0] == "run_started" and kinds[-1] == "run_ended"
    train = events[0]["train_problems"]
    assert len(train) == 2 and len(events[0]["held_out_problems"]) == 1
    judged = [e for e in events if e["event"] == "candidate_judged" and e["phase"] == "search"]
    pairs = {(e["generation"], e["genome_id"], e["problem"]) for e in judged}
    assert len(judged) == len(pairs) == 2 * 3 * len(train)   # none lost, none twice
    assert kinds.count("generation_summary") == 2
    for e in judged:
        assert set(e["scores"]) == {*Scores.OBJECTIVES, "fixed"}
        assert all(0.0 <= v <= 1.0 for v in e["scores"].values())
    ck = rd.load_checkpoint()
    assert ck["generation"] == 2 and len(ck["genomes"]) == 6
    assert len(ck["evolution"]["population"]) == 3


def test_adapters_are_trained_once_per_key(finished):
    _, rd = finished
    ready = [e for e in rd.events() if e["event"] == "adapter_ready"]
    trained = [e["key"] for e in ready if e["outcome"] == "trained"]
    assert len(trained) == len(set(trained)) >= 1
    assert {e["outcome"] for e in ready} <= {"hit", "trained", "joined"}


def test_result_files_and_held_out(finished):
    cfg, rd = finished
    pareto, best, held = (rd.read_json(n) for n in ("pareto.json", "best.json", "heldout.json"))
    assert len(pareto["population"]) == 3 and any(p["front"] for p in pareto["population"])
    assert best["id"] in {p["id"] for p in pareto["population"]}
    assert len(held["genomes"]) == 2 and held["problems"] == \
        [e for e in rd.events() if e["event"] == "run_started"][0]["held_out_problems"]
    kinds = [e["event"] for e in rd.events()]
    assert kinds.count("heldout_scored") == 2
    assert rd.load_config() == cfg
    assert not (rd.path / "live.json").exists()


def test_resume_refuses_a_different_search_config(finished, pools, quixbugs_dir):
    cfg, rd = finished
    changed = cfgmod.load(cfg.source, [f"dataset.quixbugs={quixbugs_dir}",
                                       f"run.runs_dir={cfg.run.runs_dir}",
                                       f"storage.adapters={cfg.storage.adapters}",
                                       *ENGINE_OVERRIDES, "search.mutation_rate=0.9"])
    with pytest.raises(ResumeRefused, match="search.mutation_rate"):
        make_engine(changed, pools).run(resume=True)


def test_resume_extends_a_finished_run(tmp_path, quixbugs_dir, pools):
    cfg = engine_config(tmp_path, quixbugs_dir, "search.generations=1",
                        "run.held_out_eval=false")
    rd = make_engine(cfg, pools).run(resume=False)
    longer = engine_config(tmp_path, quixbugs_dir, "search.generations=2",
                           "run.held_out_eval=false")
    make_engine(longer, pools).run(resume=True)
    events = rd.events()
    assert [e["generation"] for e in events if e["event"] == "generation_summary"] == [0, 1]
    assert [e["event"] for e in events].count("run_started") == 2
    assert rd.load_checkpoint()["generation"] == 2


def test_status_and_report(finished, capsys):
    from coral.cli import main

    _, rd = finished
    assert main(["status", str(rd.path)]) == 0
    text = capsys.readouterr().out
    assert "generation 2/2" in text and "duplicate trainings 0" in text
    assert main(["status", str(rd.path), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["state"] == "finished" and summary["cache"]["duplicate_trainings"] == 0
    assert main(["report", str(rd.path)]) == 0
    md = (rd.path / "report.md").read_text()
    assert "## Best genome" in md and "Held-out" in md
    for png in ("pareto.png", "fitness.png", "cache.png"):
        assert (rd.path / png).stat().st_size > 5000
