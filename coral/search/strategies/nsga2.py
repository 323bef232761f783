"""NSGA-II (mu + lambda, elitist): offspring by tournament, crossover and mutation.

Generation 0 is `population_size` random genomes (after the untuned genomes when
`search.seed_population`, see PopulationStrategy); later generations are as many offspring,
parents picked by binary tournament on (front rank, crowding distance) of the survivors, then
crossover (probability crossover_rate) and per-gene mutation. `tell` (PopulationStrategy)
merges parents and offspring and keeps the best `population_size` behind the gates.
"""

from __future__ import annotations

import numpy as np

from coral.search.genome import Genome, crossover, mutate, random_genome
from coral.search.selection import rank_and_crowding
from coral.search.strategies import register
from coral.search.strategies.base import PopulationStrategy


@register("nsga2")
class NSGA2(PopulationStrategy):
    """Non-dominated sorting genetic algorithm II over genomes."""

    def breed(self, ids: list[str]) -> list[Genome]:
        """Random genomes first; then tournament selection, crossover and mutation."""
        if not self._population:
            return [random_genome(self.cfg, self.rng, gid) for gid in ids]
        genomes = [g for g, _ in self._population]
        rank, crowd = rank_and_crowding([s.vector(self.cfg.objectives)
                                         for _, s in self._population])
        children = []
        for gid in ids:
            a = genomes[self._tournament(rank, crowd)]
            b = genomes[self._tournament(rank, crowd)]
            if self.rng.random() < self.cfg.crossover_rate:
                child = crossover(a, b, self.rng, gid)
            else:
                child = Genome(id=gid, heavy=a.heavy, ca=a.ca, knob_genes=a.knob_genes)
            children.append(mutate(child, self.cfg, self.rng, gid))
        return children

    def _tournament(self, rank: np.ndarray, crowd: np.ndarray) -> int:
        """Binary tournament: lower rank wins, then larger crowding, then the first drawn."""
        i, j = (int(v) for v in self.rng.integers(len(rank), size=2))
        if (rank[j], -crowd[j]) < (rank[i], -crowd[i]):
            return j
        return i
