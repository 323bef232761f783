"""Engine with in-process pools: a whole tiny run, its run directory, resume rules, report."""

from __future__ import annotations

import dataclasses
import io
import json

import pytest

from coral import config as cfgmod
from coral.objectives import NAMES
from coral.run.engine import Engine, ResumeRefused, problems_for
from coral.run.progress import Progress
from coral.run.rundir import RunDir

ENGINE_OVERRIDES = [
    "dataset.problems=[gcd, bitcount, flatten]", "dataset.held_out_fraction=0.34",
    "search.population_size=3", "search.generations=2", "run.held_out_top_k=2",
    "search.reevaluate_top=2",
    "knobs.max_new_tokens=12", "search.genes.steps=[2]", "training.examples=8",
    # every genome trains and samples n answers: the plain engine these tests count
    # (tests/run/test_racing_engine.py runs the defaults: seeded, greedy, racing)
    "search.seed_population=false", "knobs.greedy_fraction=0", "search.evaluation=fixed",
]


def engine_config(tmp_path, quixbugs_dir, *extra: str,
                  base: tuple = tuple(ENGINE_OVERRIDES)) -> cfgmod.Config:
    """configs/smoke.yaml shrunk for tests (`base`), with run dir and adapter store under
    tmp_path."""
    return cfgmod.load("configs/smoke.yaml", [
        f"dataset.quixbugs={quixbugs_dir}", f"run.runs_dir={tmp_path}/runs",
        f"storage.adapters={tmp_path}/adapters", *base, *extra])


def open_pools(tmp_path_factory, quixbugs_dir):
    """In-process pools (tiny model, real training, real sandbox), closed after the yield."""
    from coral.run.pools import in_process_pools

    cfg = engine_config(tmp_path_factory.mktemp("w"), quixbugs_dir)
    train, held = problems_for(cfg)
    w = in_process_pools(cfg, (*train, *held))
    yield w
    w.close()


@pytest.fixture(scope="module")
def pools(tmp_path_factory, quixbugs_dir):
    """The pools, shared by the module."""
    yield from open_pools(tmp_path_factory, quixbugs_dir)


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


def test_run_scores_every_genome_on_every_problem(finished):
    cfg, rd = finished
    events = rd.events()
    kinds = [e["event"] for e in events]
    assert kinds[0] == "run_started" and kinds[-1] == "run_ended"
    train = events[0]["train_problems"]
    assert len(train) == 2 and len(events[0]["held_out_problems"]) == 1
    judged = [e for e in events if e["event"] == "candidate_judged" and e["phase"] == "search"]
    keys = {(e["generation"], e["genome_id"], e["problem"], e["sample"]) for e in judged}
    n = cfg.search.samples_per_problem
    assert n == 2 and len(judged) == len(keys) == 2 * 3 * len(train) * n  # none lost or twice
    assert kinds.count("generation_summary") == 2
    for e in judged:
        assert set(e["scores"]) == set(NAMES) and e["tokens"] >= 0
        assert all(0.0 <= v <= 1.0 for v in e["scores"].values())
        if e["status"] in ("UNCHANGED", "MISSING_FUNCTION") or not e["code"]:
            assert set(e["scores"].values()) == {0.0}        # degenerate answers score 0
    ck = rd.load_checkpoint()
    assert ck["version"] == 3 and ck["generation"] == 2 and len(ck["genomes"]) == 6
    assert len(ck["evolution"]["population"]) == 3
    summary = [e for e in events if e["event"] == "generation_summary"][0]
    assert summary["samples"] == 3 * len(train) * n and summary["tokens_per_sample"] > 0


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
    assert kinds.count("heldout_scored") == 2 and kinds.count("final_scored") == 2
    # The final pick was re-evaluated on fresh seeds: samples of phase "final" exist, and
    # best.json carries those scores next to the search ones.
    final = [e for e in rd.events() if e["event"] == "candidate_judged" and e["phase"] == "final"]
    assert len(final) == 2 * 2 * cfg.search.samples_per_problem and set(best["final"]) == set(NAMES)
    assert best["id"] in {e["genome_id"] for e in final}
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


def test_resume_refuses_an_old_checkpoint_format(tmp_path, quixbugs_dir, pools):
    cfg = engine_config(tmp_path, quixbugs_dir, "search.generations=1",
                        "run.held_out_eval=false")
    rd = make_engine(cfg, pools).run(resume=False)
    ck = rd.load_checkpoint()
    rd.save_checkpoint(dict(ck, version=1))
    with pytest.raises(ResumeRefused, match="older CORAL.*--no-resume"):
        make_engine(cfg, pools).run(resume=True)


def test_a_strategy_registered_here_runs_through_the_engine(tmp_path, quixbugs_dir, pools):
    from coral.search.strategies import register, unregister
    from coral.search.strategies.random import RandomSearch

    @register("test-engine-random-twice")
    class Twice(RandomSearch):
        """Random search that asks each random genome twice (new ids, same genes)."""

        def breed(self, ids):
            half = super().breed(ids[: (len(ids) + 1) // 2])
            return [dataclasses.replace(half[k // 2], id=i) for k, i in enumerate(ids)]

    try:
        cfg = engine_config(tmp_path, quixbugs_dir, "search.strategy=test-engine-random-twice",
                            "search.generations=1", "run.held_out_eval=false",
                            "search.reevaluate_top=1")
        rd = make_engine(cfg, pools).run(resume=False)
    finally:
        unregister("test-engine-random-twice")
    ck = rd.load_checkpoint()
    assert ck["evolution"]["strategy"] == "test-engine-random-twice"
    g = list(ck["genomes"].values())
    assert g[0]["genome"]["heavy"] == g[1]["genome"]["heavy"] and g[0]["key"] == g[1]["key"]


def test_resume_extends_a_finished_run(tmp_path, quixbugs_dir, pools):
    cfg = engine_config(tmp_path, quixbugs_dir, "search.generations=1",
                        "run.held_out_eval=false")
    rd = make_engine(cfg, pools).run(resume=False)
    longer = engine_config(tmp_path, quixbugs_dir, "search.generations=2",
                           "run.held_out_eval=false")
    out = io.StringIO()
    resumed = make_engine(longer, pools)
    resumed.progress = Progress(enabled=True, out=out, bars=False)
    resumed.run(resume=True)
    events = rd.events()
    assert [e["generation"] for e in events if e["event"] == "generation_summary"] == [0, 1]
    # samples spent go on counting across drivers: 3 genomes x 2 problems x 2 samples a
    # generation, so 24 after the resumed generation (this driver generated only 12)
    assert [e["samples_spent"] for e in events if e["event"] == "generation_summary"] == [12, 24]
    assert "samples spent 24" in out.getvalue()
    assert [e["event"] for e in events].count("run_started") == 2
    assert rd.load_checkpoint()["generation"] == 2


def test_status_and_report(finished, capsys):
    from coral.cli import main

    _, rd = finished
    assert main(["status", str(rd.path)]) == 0
    text = capsys.readouterr().out
    assert "generation 2/2" in text and "duplicate trainings 0" in text
    assert "UNCHANGED" in text and "tokens per sample" in text and "pass@k" in text
    assert main(["status", str(rd.path), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["state"] == "finished" and summary["cache"]["duplicate_trainings"] == 0
    assert main(["report", str(rd.path)]) == 0
    md = (rd.path / "report.md").read_text()
    assert "## Best genome" in md and "Held-out" in md and "| fresh seeds |" in md
    assert "UNCHANGED" in md and "tokens per sample" in md and "pass@k" in md
    for png in ("pareto.png", "fitness.png", "cache.png"):
        assert (rd.path / png).stat().st_size > 5000
