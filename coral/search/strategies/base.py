"""The `SearchStrategy` Protocol the engine drives, and a base class for population methods.

Evaluation stays outside (as in pymoo's ask/tell and Ray Tune's Searcher): `ask()` hands out
genomes, the caller judges them and `tell()` returns one `Scores` per genome. Asking twice
without a tell returns the same pending list (so a resumed driver can simply ask again);
`tell` must score exactly the pending genomes. Determinism: one numpy Generator from the seed,
list order everywhere, ids from `genome.make_id`; all state round-trips through `state_dict()`
/ `load_state()` as plain JSON.
"""

from __future__ import annotations

import logging
import math
from typing import ClassVar, Mapping, Protocol

import numpy as np

from coral.config import SearchConfig
from coral.messages import Scores
from coral.search.baselines import ROLES, untuned_genomes
from coral.search.genome import Genome, genome_from_dict, genome_to_dict, make_id
from coral.search.selection import gate_threshold, non_dominated_sort, truncate

log = logging.getLogger(__name__)

STATE_VERSION = 3  # 3: steps and learning rate are heavy genes


class StateRefused(ValueError):
    """A saved strategy state this code cannot continue (older format, other strategy)."""


class SearchStrategy(Protocol):
    """What the engine needs from a search strategy."""

    name: ClassVar[str]

    @property
    def generation(self) -> int:
        """Index of the generation the next `ask` produces (= number of completed tells)."""

    @property
    def population(self) -> list[tuple[Genome, Scores]]:
        """Current survivors with their scores, best first."""

    def ask(self) -> list[Genome]:
        """Genomes to evaluate this generation (the same list again until `tell`)."""

    def tell(self, scored: Mapping[str, Scores]) -> None:
        """Scores of exactly the asked genomes, by genome id."""

    def state_dict(self) -> dict:
        """Everything needed to continue identically, as plain JSON data."""

    def load_state(self, state: dict) -> None:
        """Continue from `state_dict()` output (raises StateRefused if it cannot)."""


class PopulationStrategy:
    """Shared machinery: pending genomes, the scored population, gates, checkpoint state.

    Subclasses implement `breed(ids)` (the genomes of the next generation). With
    `search.seed_population`, generation 0 starts with the untuned model at greedy decoding
    and at default knobs (coral.search.baselines) and `breed` fills the rest. Survivors are the
    elitist NSGA-II truncation of parents + newcomers on `search.objectives`, behind
    `search.gates` (coral.search.selection.truncate), and always include the best so far by
    the primary objective (a crowded first front or a gate must not drop it).
    """

    name: ClassVar[str] = ""

    def __init__(self, search_cfg: SearchConfig, seed: int) -> None:
        self.cfg = search_cfg
        self.seed = int(seed)
        self.rng = np.random.default_rng(self.seed)
        self._generation = 0
        self._population: list[tuple[Genome, Scores]] = []
        self._pending: list[Genome] = []
        self._thresholds: list[list[float]] = []

    # ------------------------------------------------------------------ views
    @property
    def generation(self) -> int:
        """Index of the generation the next `ask` produces (= number of completed tells)."""
        return self._generation

    @property
    def population(self) -> list[tuple[Genome, Scores]]:
        """Current survivors with their scores, best first."""
        return list(self._population)

    @property
    def pending(self) -> list[Genome]:
        """Genomes asked for and not yet told."""
        return list(self._pending)

    def pareto_front(self) -> list[tuple[Genome, Scores]]:
        """The non-dominated survivors on the search objectives."""
        if not self._population:
            return []
        front = non_dominated_sort([s.vector(self.cfg.objectives) for _, s in self._population])
        return [self._population[i] for i in front[0]]

    def thresholds(self, generation: int | None = None) -> list[float]:
        """The gates' thresholds applied when telling `generation` (gate order)."""
        g = self._generation if generation is None else generation
        return [gate_threshold(gate, g, self.cfg.generations) for gate in self.cfg.gates]

    # ------------------------------------------------------------------ ask / tell
    def ask(self) -> list[Genome]:
        """Genomes to evaluate this generation (the same list again until `tell`)."""
        if not self._pending:
            ids = [make_id(self.seed, self._generation, i)
                   for i in range(self.cfg.population_size)]
            seeded = (untuned_genomes(self.cfg, ids[: len(ROLES)])
                      if self.cfg.seed_population and self._generation == 0 else [])
            self._pending = seeded + self.breed(ids[len(seeded):])
        return list(self._pending)

    def breed(self, ids: list[str]) -> list[Genome]:
        """The next generation's genomes, one per id."""
        raise NotImplementedError

    def tell(self, scored: Mapping[str, Scores]) -> None:
        """Scores of exactly the pending genomes; keeps the best `population_size`."""
        if not self._pending:
            raise RuntimeError("tell() without a pending ask()")
        want = [g.id for g in self._pending]
        if sorted(scored) != sorted(want):
            raise ValueError(f"tell() needs scores for exactly the asked genomes; missing "
                             f"{sorted(set(want) - set(scored))}, unexpected "
                             f"{sorted(set(scored) - set(want))}")
        pool = self._population + [(g, _checked(scored[g.id])) for g in self._pending]
        thresholds = self.thresholds()
        keep = truncate([s.vector(self.cfg.objectives) for _, s in pool],
                        [s.vector([gate.objective for gate in self.cfg.gates]) for _, s in pool],
                        thresholds, self.cfg.population_size)
        keep = _with_best(keep, [s for _, s in pool])
        self._population = [pool[i] for i in keep]
        self._thresholds.append(thresholds)
        self._pending = []
        self._generation += 1
        log.info("generation %d told: %d scored, %d survivors, front of %d, gates %s",
                 self._generation - 1, len(scored), len(self._population),
                 len(self.pareto_front()), [round(t, 4) for t in thresholds])

    # ------------------------------------------------------------------ checkpoint
    def state_dict(self) -> dict:
        """Everything needed to continue identically, as plain JSON-serialisable data."""
        return {
            "version": STATE_VERSION, "strategy": self.name, "seed": self.seed,
            "generation": self._generation,
            "population": [{"genome": genome_to_dict(g), "scores": s.to_dict()}
                           for g, s in self._population],
            "pending": [genome_to_dict(g) for g in self._pending],
            "thresholds": self._thresholds,
            "rng": _plain(self.rng.bit_generator.state),
        }

    def load_state(self, state: dict) -> None:
        """Continue from `state_dict()` output of the same strategy and format."""
        if state.get("version") != STATE_VERSION:
            raise StateRefused(
                f"search state of format {state.get('version')!r}, this CORAL reads format "
                f"{STATE_VERSION} (objectives changed); start the run again with --no-resume")
        if state.get("strategy") != self.name:
            raise StateRefused(f"checkpoint strategy {state.get('strategy')!r} differs from "
                               f"config strategy {self.name!r}")
        self.seed = int(state["seed"])
        self._generation = int(state["generation"])
        self._population = [(genome_from_dict(p["genome"]), Scores.from_dict(p["scores"]))
                            for p in state["population"]]
        self._pending = [genome_from_dict(d) for d in state["pending"]]
        self._thresholds = [list(map(float, t)) for t in state["thresholds"]]
        self.rng.bit_generator.state = state["rng"]


def _with_best(keep: list[int], scores: list[Scores]) -> list[int]:
    """`keep` with the best-so-far (highest display score, first on ties) in it: replaces
    the last survivor when truncation dropped it (elitism on what the user is handed)."""
    from coral.judge.fitness import display_score

    best = max(range(len(scores)), key=lambda i: (display_score(scores[i]), -i))
    if best in keep or not keep:
        return keep
    return keep[:-1] + [best]


def _checked(scores: Scores) -> Scores:
    """Scores with every value finite (a NaN would make selection order arbitrary)."""
    if not isinstance(scores, Scores) or not all(math.isfinite(v) for v in scores.vector()):
        raise ValueError(f"tell() needs Scores with finite values, got {scores!r}")
    return scores


def _plain(obj):
    """numpy scalars inside the bit-generator state -> Python ints (for JSON)."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, np.integer):
        return int(obj)
    return obj
