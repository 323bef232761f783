"""NSGA-II sorting and crowding, ask/tell, gates, checkpoints and cross-process determinism."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from coral.config import GateConfig, GeneChoices, SearchConfig
from coral.search.evolution import (Evolution, crowding_distance, gate_threshold, non_dominated_sort,
                             nsga2_order)
from coral.search.genome import Genome, genome_to_dict, is_valid
from coral.messages import Scores

REPO = Path(__file__).resolve().parents[2]


def _dominates(a, b) -> bool:
    return all(x >= y for x, y in zip(a, b)) and any(x > y for x, y in zip(a, b))


def _brute_fronts(points) -> list[list[int]]:
    """Peel fronts by checking every pair directly (the definition)."""
    left = list(range(len(points)))
    fronts = []
    while left:
        front = [i for i in left if not any(_dominates(points[j], points[i]) for j in left)]
        fronts.append(front)
        left = [i for i in left if i not in front]
    return fronts


def test_non_dominated_sort_matches_brute_force_on_random_sets():
    rng = np.random.default_rng(0)
    for trial in range(300):
        n = int(rng.integers(1, 25))
        m = int(rng.integers(1, 6))
        # few distinct levels: many ties and exact duplicates
        levels = int(rng.integers(2, 6))
        points = (rng.integers(0, levels, size=(n, m)) / levels).tolist()
        if trial % 5 == 0 and n > 1:
            points[-1] = list(points[0])                  # a guaranteed duplicate
        assert non_dominated_sort(points) == _brute_fronts(points), points


def test_non_dominated_sort_edge_cases():
    assert non_dominated_sort([]) == []
    assert non_dominated_sort([[0.5, 0.5], [0.5, 0.5]]) == [[0, 1]]   # duplicates share a front
    assert non_dominated_sort([[0, 0], [1, 1], [1, 0]]) == [[1], [2], [0]]


def test_crowding_distance_boundaries_infinite_and_interior_exact():
    points = [[0.0, 1.0], [0.25, 0.75], [0.5, 0.5], [1.0, 0.0]]
    d = crowding_distance(points, [0, 1, 2, 3])
    assert math.isinf(d[0]) and math.isinf(d[3])
    assert d[1] == pytest.approx(2 * (0.5 - 0.0) / 1.0)
    assert d[2] == pytest.approx(2 * (1.0 - 0.25) / 1.0)
    assert np.isinf(crowding_distance(points, [1, 2])).all()
    flat = crowding_distance([[0.3, 0.1], [0.3, 0.2], [0.3, 0.3]], [0, 1, 2])
    assert math.isinf(flat[0]) and math.isinf(flat[2]) and flat[1] == pytest.approx(1.0)
    rng = np.random.default_rng(1)
    for _ in range(50):
        pts = rng.random((10, 3))
        front = list(range(10))
        dist = crowding_distance(pts, front)
        for m in range(3):
            assert math.isinf(dist[int(np.argmax(pts[:, m]))])
            assert math.isinf(dist[int(np.argmin(pts[:, m]))])


def test_nsga2_order_puts_fronts_first_then_spread():
    points = [[0, 0], [1, 0], [0, 1], [0.5, 0.5], [0.6, 0.45], [0.2, 0.2]]
    order = nsga2_order(points)
    assert set(order[:4]) == {1, 2, 3, 4} and order[4:] == [5, 0]
    assert set(order[:2]) == {1, 2}                       # boundary points before interior


def _synthetic(genome: Genome) -> tuple[float, ...]:
    """Deterministic objectives computed from the genes (a stand-in for QuixBugs)."""
    h, ca = genome.heavy, genome.ca
    live = sum(ca.cells) / len(ca.cells)
    return (h.r / 16, h.lora_alpha / 32 * (1 - h.lora_dropout), float(h.use_dora),
            1 - abs(live - 0.5), len(h.target_modules) / 4 * ca.steps / 32)


def _drive(evo: Evolution, generations: int) -> list[list[str]]:
    """Run ask/tell with synthetic scores; return every generation's asked ids."""
    asked = []
    for _ in range(generations):
        genomes = evo.ask()
        asked.append([g.id for g in genomes])
        evo.tell({g.id: _synthetic(g) for g in genomes})
    return asked


def test_ask_is_idempotent_and_tell_checks_ids():
    evo = Evolution(SearchConfig(population_size=4), seed=1)
    with pytest.raises(RuntimeError, match="without a pending"):
        evo.tell({})
    first = evo.ask()
    assert evo.ask() == first and evo.generation == 0
    assert len({g.id for g in first}) == 4
    with pytest.raises(ValueError, match="exactly the asked"):
        evo.tell({g.id: _synthetic(g) for g in first[:3]})
    with pytest.raises(ValueError, match="finite"):
        evo.tell({g.id: (1.0, 2.0) for g in first})
    evo.tell({g.id: Scores(*_synthetic(g)) for g in first})      # Scores values work too
    assert evo.generation == 1 and len(evo.population) == 4
    assert evo.population[0][1] in [_synthetic(g) for g in first]
    assert evo.ask() != first


def test_nsga2_survivors_are_the_best_fronts_of_parents_plus_offspring():
    cfg = SearchConfig(population_size=8, generations=6)
    evo = Evolution(cfg, seed=5)
    for _ in range(6):
        parents = evo.population
        genomes = evo.ask()
        scores = {g.id: _synthetic(g) for g in genomes}
        evo.tell(scores)
        pool = parents + [(g, scores[g.id]) for g in genomes]
        fronts = _brute_fronts([v for _, v in pool])
        kept = {g.id for g, _ in evo.population}
        assert len(kept) == 8
        # mu + lambda elitism: whole fronts are kept in order; only the last one is cut
        for front in fronts:
            ids = {pool[i][0].id for i in front}
            if not ids <= kept:
                later = [pool[i][0].id for f in fronts[fronts.index(front) + 1:] for i in f]
                assert not (set(later) & kept)
                break
        assert all(is_valid(g, cfg) for g, _ in evo.population)
    front = evo.pareto_front()
    assert front and all(not any(_dominates(w, v) for _, w in evo.population)
                         for _, v in front)


def test_random_strategy_samples_fresh_genomes_within_choices():
    choices = GeneChoices(r=(2, 64), lora_alpha=(3.0,), target_modules=(("o_proj",),))
    cfg = SearchConfig(strategy="random", population_size=6, genes=choices)
    evo = Evolution(cfg, seed=2)
    seen = []
    for gen in range(3):
        genomes = evo.ask()
        assert len(genomes) == 6 and all(g.id.startswith(f"g{gen:03d}-") for g in genomes)
        assert all(is_valid(g, cfg) for g in genomes)
        seen += genomes
        evo.tell({g.id: _synthetic(g) for g in genomes})
    assert {g.heavy.r for g in seen} == {2, 64}
    assert len({g.ca.cells for g in seen}) == 18                 # all fresh samples
    assert len(evo.population) == 6                              # archive, NSGA-II truncated


@pytest.mark.parametrize("strategy", ["nsga2", "random"])
@pytest.mark.parametrize("schedule", ["sigmoid", "linear", "sqrt"])
def test_gate_never_empties_population(strategy, schedule):
    gate = GateConfig(enabled=True, objective="security", schedule=schedule, start=0.5, end=1.0)
    cfg = SearchConfig(strategy=strategy, population_size=5, generations=4, gate=gate)
    evo = Evolution(cfg, seed=3)
    for gen in range(4):
        genomes = evo.ask()
        # nobody ever reaches the gate on "security" (index 2)
        evo.tell({g.id: (0.1 * i, 0.5, 0.0, 0.2, 0.3) for i, g in enumerate(genomes)})
        assert len(evo.population) == 5
    assert evo.threshold(0) == pytest.approx(0.5) and evo.threshold(3) == pytest.approx(1.0)


def test_gate_drops_failing_genomes_when_enough_pass():
    gate = GateConfig(enabled=True, objective="bugfix", schedule="linear", start=0.5, end=0.5)
    cfg = SearchConfig(population_size=4, gate=gate)
    evo = Evolution(cfg, seed=4)
    genomes = evo.ask()
    evo.tell({g.id: (0.6 if i % 2 else 0.1, 0.0, 0.0, 0.0, 1.0 - 0.1 * i)
              for i, g in enumerate(genomes)})
    # 2 pass; the fill takes the two failing ones (all score 0.1 on bugfix)
    assert sum(v[0] >= 0.5 for _, v in evo.population) == 2
    genomes = evo.ask()
    evo.tell({g.id: (0.9, 0.0, 0.0, 0.0, 0.0) for g in genomes})
    assert all(v[0] >= 0.5 for _, v in evo.population)         # now every survivor passes


def test_gate_schedules_run_from_start_to_end_monotonically():
    for schedule in ("sigmoid", "linear", "sqrt"):
        gate = GateConfig(enabled=True, schedule=schedule, start=0.1, end=0.7)
        values = [gate_threshold(gate, g, 10) for g in range(10)]
        assert values[0] == pytest.approx(0.1) and values[-1] == pytest.approx(0.7)
        assert all(b >= a for a, b in zip(values, values[1:]))
    assert gate_threshold(GateConfig(schedule="linear", start=0.2, end=0.4), 0, 1) == 0.4


@pytest.mark.parametrize("strategy", ["nsga2", "random"])
def test_checkpoint_round_trip_mid_run_continues_identically(strategy):
    cfg = SearchConfig(strategy=strategy, population_size=6,
                       gate=GateConfig(enabled=True, schedule="sqrt", start=0.0, end=0.4))
    ref = Evolution(cfg, seed=9)
    _drive(ref, 2)
    pending = ref.ask()                                          # checkpoint with pending
    state = json.loads(json.dumps(ref.state_dict()))
    resumed = Evolution.from_state(cfg, state)
    assert resumed.generation == 2 and resumed.ask() == pending
    assert [(g, v) for g, v in resumed.population] == ref.population
    assert _drive(ref, 3) == _drive(resumed, 3)
    assert ref.state_dict() == resumed.state_dict()
    with pytest.raises(ValueError, match="strategy"):
        other = "random" if strategy == "nsga2" else "nsga2"
        Evolution.from_state(SearchConfig(strategy=other), state)


_SCRIPT = """
import json, sys
sys.path.insert(0, {repo!r})
from coral.config import SearchConfig
from coral.search.evolution import Evolution
from coral.search.genome import genome_to_dict
sys.path.insert(0, {tests!r})
from test_evolution import _synthetic
evo = Evolution(SearchConfig(population_size=6), seed=11)
out = []
for _ in range(3):
    genomes = evo.ask()
    out.append([genome_to_dict(g) for g in genomes])
    evo.tell({{g.id: _synthetic(g) for g in genomes}})
out.append(evo.state_dict())
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
    here = Evolution(SearchConfig(population_size=6), seed=11)
    first = here.ask()
    assert json.loads(outputs[0])[0] == [genome_to_dict(g) for g in first]
