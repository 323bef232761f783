"""Random search, the baseline: every generation is `population_size` fresh random genomes
(generation 0 begins with the untuned genomes when `search.seed_population`, as NSGA-II's).

Same budget as NSGA-II; `tell` keeps an archive with the same gated NSGA-II truncation
(PopulationStrategy), so reports of both read the same.
"""

from __future__ import annotations

from coral.search.genome import Genome, random_genome
from coral.search.strategies import register
from coral.search.strategies.base import PopulationStrategy


@register("random")
class RandomSearch(PopulationStrategy):
    """Uniform random genomes every generation."""

    def breed(self, ids: list[str]) -> list[Genome]:
        """Fresh random genomes, one per id."""
        return [random_genome(self.cfg, self.rng, gid) for gid in ids]
