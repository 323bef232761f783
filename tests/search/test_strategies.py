"""Search strategies through the SearchStrategy Protocol: registry, ask/tell, gates, state."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from coral.config import ConfigError, GateConfig, GeneChoices, SearchConfig, from_dict
from coral.messages import Scores
from coral.objectives import NAMES
from coral.search.genome import Genome, genome_to_dict, is_valid
from coral.search.selection import non_dominated_sort
from coral.search.strategies import (StateRefused, check_strategy, make_strategy, register,
                                     strategy_names, unregister)
from coral.search.strategies.random import RandomSearch

REPO = Path(__file__).resolve().parents[2]
ALL = {"objectives": NAMES, "gates": ()}   # every objective, no gate: plain NSGA-II


def _synthetic(genome: Genome) -> Scores:
    """Deterministic scores computed from the genes (a stand-in for QuixBugs)."""
    h, ca = genome.heavy, genome.ca
    live = sum(ca.cells) / len(ca.cells)
    values = (h.r / 16, h.lora_alpha / 32 * (1 - h.lora_dropout), float(h.use_dora),
              1 - abs(live - 0.5), len(h.target_modules) / 4 * ca.steps / 32,
              genome.knob_genes[0])
    return Scores(**dict(zip(NAMES, values)))


def _drive(strategy, generations: int) -> list[list[str]]:
    """Run ask/tell with synthetic scores; return every generation's asked ids."""
    asked = []
    for _ in range(generations):
        genomes = strategy.ask()
        asked.append([g.id for g in genomes])
        strategy.tell({g.id: _synthetic(g) for g in genomes})
    return asked


def _dominates(a, b) -> bool:
    return all(x >= y for x, y in zip(a, b)) and any(x > y for x, y in zip(a, b))


def test_builtins_are_registered_and_config_checks_the_name():
    assert {"nsga2", "random"} <= set(strategy_names())
    cfg = from_dict({"search": {"strategy": "cma"}})  # the config does not import the search
    with pytest.raises(ConfigError, match="search.strategy: must be one of 'nsga2', 'random'"):
        check_strategy(cfg)


def test_ask_is_idempotent_and_tell_checks_ids():
    strat = make_strategy(SearchConfig(population_size=4, **ALL), seed=1)
    with pytest.raises(RuntimeError, match="without a pending"):
        strat.tell({})
    first = strat.ask()
    assert strat.ask() == first and strat.generation == 0
    assert len({g.id for g in first}) == 4
    with pytest.raises(ValueError, match="exactly the asked"):
        strat.tell({g.id: _synthetic(g) for g in first[:3]})
    with pytest.raises(ValueError, match="finite"):
        strat.tell({g.id: Scores(fixed=float("nan")) for g in first})
    strat.tell({g.id: _synthetic(g) for g in first})
    assert strat.generation == 1 and len(strat.population) == 4
    assert strat.ask() != first


def test_nsga2_survivors_are_the_best_fronts_of_parents_plus_offspring():
    cfg = SearchConfig(population_size=8, generations=6, **ALL)
    strat = make_strategy(cfg, seed=5)
    for _ in range(6):
        parents = strat.population
        genomes = strat.ask()
        scores = {g.id: _synthetic(g) for g in genomes}
        strat.tell(scores)
        pool = parents + [(g, scores[g.id]) for g in genomes]
        fronts = non_dominated_sort([s.vector() for _, s in pool])
        kept = {g.id for g, _ in strat.population}
        assert len(kept) == 8
        # mu + lambda elitism: whole fronts are kept in order; only the last one is cut
        for i, front in enumerate(fronts):
            if not {pool[j][0].id for j in front} <= kept:
                later = {pool[j][0].id for f in fronts[i + 1:] for j in f}
                assert not (later & kept)
                break
        assert all(is_valid(g, cfg) for g, _ in strat.population)
    front = strat.pareto_front()
    assert front and all(not any(_dominates(w.vector(), v.vector()) for _, w in strat.population)
                         for _, v in front)


def test_random_strategy_samples_fresh_genomes_within_choices():
    choices = GeneChoices(r=(2, 64), lora_alpha=(3.0,), target_modules=(("o_proj",),))
    cfg = SearchConfig(strategy="random", population_size=6, genes=choices, **ALL)
    strat = make_strategy(cfg, seed=2)
    assert isinstance(strat, RandomSearch)
    seen = []
    for gen in range(3):
        genomes = strat.ask()
        assert len(genomes) == 6 and all(g.id.startswith(f"g{gen:03d}-") for g in genomes)
        assert all(is_valid(g, cfg) for g in genomes)
        seen += genomes
        strat.tell({g.id: _synthetic(g) for g in genomes})
    assert {g.heavy.r for g in seen} == {2, 64}
    assert len({g.ca.cells for g in seen}) == 18                 # all fresh samples
    assert len(strat.population) == 6                            # archive, NSGA-II truncated


@pytest.mark.parametrize("strategy", ["nsga2", "random"])
def test_default_gate_puts_any_fixer_before_any_non_fixer(strategy):
    strat = make_strategy(SearchConfig(strategy=strategy, population_size=3), seed=3)
    genomes = strat.ask()
    # One genome fixes a little; the others fix nothing but shine on bugfix and syntax.
    scores = {g.id: Scores(bugfix=0.9, syntax=1.0, style=1.0) for g in genomes}
    scores[genomes[2].id] = Scores(fixed=0.05, bugfix=0.1, syntax=0.5)
    strat.tell(scores)
    assert strat.population[0][0].id == genomes[2].id and len(strat.population) == 3


@pytest.mark.parametrize("schedule", ["sigmoid", "linear", "sqrt"])
def test_gate_never_empties_population(schedule):
    gate = GateConfig(objective="security", schedule=schedule, start=0.5, end=0.9)
    strat = make_strategy(SearchConfig(population_size=5, generations=4, gates=(gate,)), 3)
    for _ in range(4):
        genomes = strat.ask()
        strat.tell({g.id: Scores(bugfix=0.1 * i, security=0.2) for i, g in enumerate(genomes)})
        assert len(strat.population) == 5
    assert strat.thresholds(0) == [pytest.approx(0.5)]
    assert strat.thresholds(3) == [pytest.approx(0.9)]


@pytest.mark.parametrize("strategy", ["nsga2", "random"])
def test_checkpoint_round_trip_mid_run_continues_identically(strategy):
    cfg = SearchConfig(strategy=strategy, population_size=6,
                       gates=(GateConfig(objective="bugfix", schedule="sqrt", end=0.4),))
    ref = make_strategy(cfg, seed=9)
    _drive(ref, 2)
    pending = ref.ask()                                          # checkpoint with pending
    state = json.loads(json.dumps(ref.state_dict()))
    resumed = make_strategy(cfg, seed=0)
    resumed.load_state(state)
    assert resumed.generation == 2 and resumed.ask() == pending
    assert resumed.population == ref.population
    assert _drive(ref, 3) == _drive(resumed, 3)
    assert ref.state_dict() == resumed.state_dict()
    other = make_strategy(SearchConfig(strategy="random" if strategy == "nsga2" else "nsga2"), 0)
    with pytest.raises(StateRefused, match="strategy"):
        other.load_state(state)
    with pytest.raises(StateRefused, match="--no-resume"):
        resumed.load_state(dict(state, version=1))


def test_a_strategy_is_one_class_and_its_registration():
    @register("test-first-generation-forever")
    class Frozen(RandomSearch):
        """Asks the same random genomes (new ids) every generation."""

        def breed(self, ids):
            rng_state = self.rng.bit_generator.state
            out = super().breed(ids)
            self.rng.bit_generator.state = rng_state
            return out

    try:
        cfg = from_dict({"search": {"strategy": "test-first-generation-forever",
                                    "population_size": 2, "seed_population": False}})
        strat = make_strategy(cfg.search, 4)
        assert isinstance(strat, Frozen) and strat.name == "test-first-generation-forever"
        a = [genome_to_dict(g)["heavy"] for g in strat.ask()]
        strat.tell({g.id: _synthetic(g) for g in strat.ask()})
        assert [genome_to_dict(g)["heavy"] for g in strat.ask()] == a
    finally:
        unregister("test-first-generation-forever")
    assert "test-first-generation-forever" not in strategy_names()


_SCRIPT = """
import json, sys
sys.path.insert(0, {repo!r})
from coral.config import SearchConfig
from coral.search.strategies import make_strategy
from coral.search.genome import genome_to_dict
sys.path.insert(0, {tests!r})
from test_strategies import _synthetic
strat = make_strategy(SearchConfig(population_size=6), seed=11)
out = []
for _ in range(3):
    genomes = strat.ask()
    out.append([genome_to_dict(g) for g in genomes])
    strat.tell({{g.id: _synthetic(g) for g in genomes}})
out.append(strat.state_dict())
print(json.dumps(out, sort_keys=True))
"""


def test_generations_identical_across_processes_and_hash_seeds():
    script = _SCRIPT.format(repo=str(REPO), tests=str(REPO / "tests" / "search"))
    outputs = []
    for hash_seed in ("1", "12345"):
        env = dict(os.environ, PYTHONHASHSEED=hash_seed)
        proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                              text=True, timeout=120, check=True)
        outputs.append(proc.stdout.strip().splitlines()[-1])
    assert outputs[0] == outputs[1]
    here = make_strategy(SearchConfig(population_size=6), seed=11)
    assert json.loads(outputs[0])[0] == [genome_to_dict(g) for g in here.ask()]
