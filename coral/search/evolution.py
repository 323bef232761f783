"""Ask/tell evolutionary search: NSGA-II (mu + lambda, elitist) or a random-sampling baseline.

Evaluation stays outside (as in pymoo): `ask()` hands out genomes, the caller scores them and
`tell()` returns one objective vector per genome (maximise all, order `Scores.OBJECTIVES`).

- nsga2: generation 0 is `population_size` random genomes; later generations are as many
  offspring, parents picked by binary tournament on (front rank, crowding distance), then
  crossover (probability crossover_rate) and per-gene mutation. `tell` merges parents and
  offspring and keeps the best `population_size` by non-dominated sorting, then crowding.
- random: every generation samples `population_size` fresh random genomes (same budget);
  `tell` keeps an archive with the same NSGA-II truncation, so reports read the same.

Optional gate (`GateConfig`): a threshold on one objective rising from `start` to `end` over
the run. Genomes below it are dropped from selection, but never so that the population
shrinks: if fewer than `population_size` pass, all that pass survive and the rest is filled
with the best of the others by the gated objective (then rank, crowding).

Asking twice without a tell returns the same pending list (so a resumed driver can simply
ask again); `tell` must score exactly the pending genomes. Determinism: one numpy Generator
from the seed, list order everywhere, ids from `genome.make_id`; all state round-trips
through `state_dict()` / `from_state()` as plain JSON.
"""

from __future__ import annotations

import logging
import math
from typing import Sequence

import numpy as np

from coral.config import GateConfig, SearchConfig
from coral.search.genome import (Genome, crossover, genome_from_dict, genome_to_dict, make_id,
                          mutate, random_genome)
from coral.messages import Scores

log = logging.getLogger(__name__)

STATE_VERSION = 1
# Steepness of the sigmoid gate schedule (normalised so it still runs start -> end).
_SIGMOID_STEEPNESS = 10.0


def non_dominated_sort(points: Sequence[Sequence[float]]) -> list[list[int]]:
    """Fronts of indices (maximisation), best first; indices ascending within a front."""
    p = np.asarray(points, dtype=float)
    n = len(p)
    if n == 0:
        return []
    ge = (p[:, None, :] >= p[None, :, :]).all(axis=2)
    gt = (p[:, None, :] > p[None, :, :]).any(axis=2)
    dominates = ge & gt                        # dominates[i, j]: i dominates j
    dominated_by = dominates.sum(axis=0)       # how many points dominate j
    fronts: list[list[int]] = []
    current = [j for j in range(n) if dominated_by[j] == 0]
    while current:
        fronts.append(current)
        for i in current:
            dominated_by = dominated_by - dominates[i]
        dominated_by[current] = -1             # removed
        current = [j for j in range(n) if dominated_by[j] == 0]
    return fronts


def crowding_distance(points: Sequence[Sequence[float]], front: Sequence[int]) -> np.ndarray:
    """Crowding distance of each member of `front` (same order); boundary points are inf."""
    p = np.asarray(points, dtype=float)
    idx = list(front)
    dist = np.zeros(len(idx))
    if len(idx) <= 2:
        dist[:] = math.inf
        return dist
    sub = p[idx]
    for m in range(sub.shape[1]):
        order = np.argsort(sub[:, m], kind="stable")
        values = sub[order, m]
        dist[order[0]] = dist[order[-1]] = math.inf
        span = values[-1] - values[0]
        if span <= 0:
            continue
        dist[order[1:-1]] += (values[2:] - values[:-2]) / span
    return dist


def rank_and_crowding(points: Sequence[Sequence[float]]) -> tuple[np.ndarray, np.ndarray]:
    """Front rank (0 = best) and crowding distance within its front of every point."""
    n = len(points)
    rank = np.zeros(n, dtype=int)
    crowd = np.zeros(n)
    for r, front in enumerate(non_dominated_sort(points)):
        rank[front] = r
        crowd[front] = crowding_distance(points, front)
    return rank, crowd


def nsga2_order(points: Sequence[Sequence[float]]) -> list[int]:
    """All indices best first: by front rank, then crowding distance (desc), then index."""
    rank, crowd = rank_and_crowding(points)
    return sorted(range(len(points)), key=lambda i: (rank[i], -crowd[i], i))


def gate_threshold(gate: GateConfig, generation: int, generations: int) -> float:
    """The gate's threshold at a generation: start -> end by its schedule over the run."""
    t = 1.0 if generations <= 1 else min(1.0, max(0.0, generation / (generations - 1)))
    if gate.schedule == "linear":
        s = t
    elif gate.schedule == "sqrt":
        s = math.sqrt(t)
    else:  # sigmoid, rescaled so s(0) = 0 and s(1) = 1
        def f(x: float) -> float:
            return 1.0 / (1.0 + math.exp(-_SIGMOID_STEEPNESS * (x - 0.5)))
        s = (f(t) - f(0.0)) / (f(1.0) - f(0.0))
    return gate.start + (gate.end - gate.start) * s


class Evolution:
    """Ask/tell search over genomes; see the module docstring for the strategies."""

    def __init__(self, search_cfg: SearchConfig, seed: int) -> None:
        self.cfg = search_cfg
        self.seed = int(seed)
        self.rng = np.random.default_rng(self.seed)
        self._generation = 0
        self._population: list[tuple[Genome, tuple[float, ...]]] = []
        self._pending: list[Genome] = []
        self._thresholds: list[float] = []

    # ------------------------------------------------------------------ views
    @property
    def generation(self) -> int:
        """Index of the generation the next `ask` produces (= number of completed tells)."""
        return self._generation

    @property
    def population(self) -> list[tuple[Genome, tuple[float, ...]]]:
        """Current survivors with their objective vectors, best (NSGA-II order) first."""
        return list(self._population)

    @property
    def pending(self) -> list[Genome]:
        """Genomes asked for and not yet told."""
        return list(self._pending)

    def pareto_front(self) -> list[tuple[Genome, tuple[float, ...]]]:
        """The non-dominated survivors (first front) with their vectors."""
        if not self._population:
            return []
        front = non_dominated_sort([v for _, v in self._population])[0]
        return [self._population[i] for i in front]

    def threshold(self, generation: int | None = None) -> float | None:
        """The gate threshold applied when telling `generation` (None when no gate)."""
        if not self.cfg.gate.enabled:
            return None
        g = self._generation if generation is None else generation
        return gate_threshold(self.cfg.gate, g, self.cfg.generations)

    # ------------------------------------------------------------------ ask / tell
    def ask(self) -> list[Genome]:
        """Genomes to evaluate this generation (the same list again until `tell`)."""
        if self._pending:
            return list(self._pending)
        g, size = self._generation, self.cfg.population_size
        ids = [make_id(self.seed, g, i) for i in range(size)]
        if self.cfg.strategy == "random" or not self._population:
            self._pending = [random_genome(self.cfg, self.rng, gid) for gid in ids]
        else:
            self._pending = self._offspring(ids)
        return list(self._pending)

    def _offspring(self, ids: list[str]) -> list[Genome]:
        """Tournament selection, crossover and mutation from the current population."""
        genomes = [g for g, _ in self._population]
        rank, crowd = rank_and_crowding([v for _, v in self._population])
        children = []
        for gid in ids:
            a = genomes[self._tournament(rank, crowd)]
            b = genomes[self._tournament(rank, crowd)]
            if self.rng.random() < self.cfg.crossover_rate:
                child = crossover(a, b, self.rng, gid)
            else:
                child = Genome(id=gid, heavy=a.heavy, ca=a.ca)
            children.append(mutate(child, self.cfg, self.rng, gid))
        return children

    def _tournament(self, rank: np.ndarray, crowd: np.ndarray) -> int:
        """Binary tournament: lower rank wins, then larger crowding, then the first drawn."""
        i, j = (int(v) for v in self.rng.integers(len(rank), size=2))
        if (rank[j], -crowd[j]) < (rank[i], -crowd[i]):
            return j
        return i

    def tell(self, scored: dict[str, Sequence[float] | Scores]) -> None:
        """Objective vectors (maximise, order Scores.OBJECTIVES) for exactly the pending ids."""
        if not self._pending:
            raise RuntimeError("tell() without a pending ask()")
        want = [g.id for g in self._pending]
        if sorted(scored) != sorted(want):
            missing = sorted(set(want) - set(scored))
            extra = sorted(set(scored) - set(want))
            raise ValueError(f"tell() needs scores for exactly the asked genomes; "
                             f"missing {missing}, unexpected {extra}")
        newcomers = [(g, _vector(scored[g.id])) for g in self._pending]
        pool = self._population + newcomers
        threshold = self.threshold()
        self._population = self._select(pool, threshold)
        self._thresholds.append(threshold if threshold is not None else math.nan)
        self._pending = []
        self._generation += 1
        log.info("generation %d told: %d scored, %d survivors, front of %d%s",
                 self._generation - 1, len(newcomers), len(self._population),
                 len(self.pareto_front()),
                 "" if threshold is None else f", gate {threshold:.3f}")

    def _select(self, pool: list[tuple[Genome, tuple[float, ...]]],
                threshold: float | None) -> list[tuple[Genome, tuple[float, ...]]]:
        """Elitist NSGA-II truncation of pool to population_size, gate first if enabled."""
        size = self.cfg.population_size
        if threshold is None:
            order = nsga2_order([v for _, v in pool])
            return [pool[i] for i in order[:size]]
        k = Scores.OBJECTIVES.index(self.cfg.gate.objective)
        passing = [i for i, (_, v) in enumerate(pool) if v[k] >= threshold]
        failing = [i for i, (_, v) in enumerate(pool) if v[k] < threshold]
        chosen = [passing[i] for i in nsga2_order([pool[i][1] for i in passing])][:size]
        if len(chosen) < size:
            # The gate never empties the population: fill with the best of the rest.
            rank, crowd = rank_and_crowding([pool[i][1] for i in failing])
            fill = sorted(range(len(failing)),
                          key=lambda j: (-pool[failing[j]][1][k], rank[j], -crowd[j], j))
            chosen += [failing[j] for j in fill[: size - len(chosen)]]
        survivors = [pool[i] for i in chosen]
        # Keep the stored population in NSGA-II order for readable reports.
        order = nsga2_order([v for _, v in survivors])
        return [survivors[i] for i in order]

    # ------------------------------------------------------------------ checkpoint
    def state_dict(self) -> dict:
        """Everything needed to continue identically, as plain JSON-serialisable data."""
        return {
            "version": STATE_VERSION,
            "strategy": self.cfg.strategy,
            "seed": self.seed,
            "generation": self._generation,
            "population": [{"genome": genome_to_dict(g), "vector": list(v)}
                           for g, v in self._population],
            "pending": [genome_to_dict(g) for g in self._pending],
            "thresholds": [None if math.isnan(t) else t for t in self._thresholds],
            "rng": _plain(self.rng.bit_generator.state),
        }

    @classmethod
    def from_state(cls, search_cfg: SearchConfig, state: dict) -> "Evolution":
        """Rebuild an Evolution from `state_dict()` output (strategy must match the config)."""
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"unsupported evolution state version {state.get('version')!r}")
        if state["strategy"] != search_cfg.strategy:
            raise ValueError(f"checkpoint strategy {state['strategy']!r} differs from "
                             f"config strategy {search_cfg.strategy!r}")
        evo = cls(search_cfg, int(state["seed"]))
        evo._generation = int(state["generation"])
        evo._population = [(genome_from_dict(p["genome"]), _vector(p["vector"]))
                           for p in state["population"]]
        evo._pending = [genome_from_dict(d) for d in state["pending"]]
        evo._thresholds = [math.nan if t is None else float(t) for t in state["thresholds"]]
        evo.rng.bit_generator.state = state["rng"]
        return evo


def _vector(values: Sequence[float] | Scores) -> tuple[float, ...]:
    """Validated objective vector: one finite float per objective (a `Scores` is accepted)."""
    if isinstance(values, Scores):
        values = values.vector()
    vec = tuple(float(v) for v in values)
    if len(vec) != len(Scores.OBJECTIVES) or not all(math.isfinite(v) for v in vec):
        raise ValueError(f"objective vector must be {len(Scores.OBJECTIVES)} finite numbers "
                         f"({', '.join(Scores.OBJECTIVES)}), got {values!r}")
    return vec


def _plain(obj):
    """numpy scalars inside the bit-generator state -> Python ints (for JSON)."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (np.integer,)):
        return int(obj)
    return obj
