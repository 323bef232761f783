"""The untuned model as genomes: the search's own baselines, seeded into generation 0.

Two genomes express the model the user started with: no adapter (`steps` 0) at greedy
decoding, and no adapter at the default knobs (the middle of every knob range). They are
written in both knob encodings at once, so whichever `knobs.encoding` a run uses decodes them
the same way:
- direct: their knob genes are `GREEDY_UNITS` / `DEFAULT_UNITS`;
- ca: an all-dead grid reads 0 on every handle (calibrated quantile ~0.5, the middle of each
  range); the greedy one has the second half of the temperature handle's chunk alive under a
  rule in which no cell dies (B4/S0-8), so that handle reads far below any calibrated value
  (quantile 0: greedy) while the token-budget handle stays in the middle.

`coral compare` measures its greedy_base and default_knobs baselines with these very knobs, so
"the search found the untuned model again" and "the baseline" are the same number.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from coral.config import KnobRanges, SearchConfig
from coral.messages import CheapKnobs
from coral.search.genome import KNOBS, CASeed, Genome, HeavyGenes
from coral.search.knobs import DEFAULT_UNITS, GREEDY_UNITS, knobs_for

ROLES = ("greedy_base", "default_knobs")
_NO_DEATH = tuple(range(9))   # survival counts: a live cell always stays alive
_BIRTH = (4,)                 # a straight edge of live cells has 3 neighbours: no growth there


def _no_adapter(search_cfg: SearchConfig) -> HeavyGenes:
    """Heavy genes meaning the bare base model (the latent genes: the first choices)."""
    ch = search_cfg.genes
    return HeavyGenes(r=int(ch.r[0]), lora_alpha=float(ch.lora_alpha[0]),
                      lora_dropout=float(ch.lora_dropout[0]),
                      target_modules=tuple(ch.target_modules[0]), use_dora=bool(ch.use_dora[0]),
                      steps=0, learning_rate=float(ch.learning_rate[0]))


def _ca(search_cfg: SearchConfig, greedy: bool) -> CASeed:
    """The grid of one untuned genome (see the module docstring)."""
    cfg = search_cfg.ca
    cells = np.zeros(cfg.width * cfg.height, dtype=int)
    if greedy:
        chunk = np.array_split(np.arange(cells.size), len(KNOBS))[0]
        half = len(chunk) // 2
        cells[chunk[half: 2 * half]] = 1
    return CASeed(width=cfg.width, height=cfg.height, cells=tuple(int(c) for c in cells),
                  birth=_BIRTH, survival=_NO_DEATH, steps=cfg.steps_min)


def untuned_genomes(search_cfg: SearchConfig, ids: Sequence[str]) -> list[Genome]:
    """The untuned model at greedy decoding and at default knobs (ROLES order), one per id."""
    heavy = _no_adapter(search_cfg)
    units = {"greedy_base": GREEDY_UNITS, "default_knobs": DEFAULT_UNITS}
    return [Genome(id=gid, heavy=heavy, ca=_ca(search_cfg, role == "greedy_base"),
                   knob_genes=tuple(units[role]))
            for gid, role in zip(ids, ROLES)]


def untuned_knobs(search_cfg: SearchConfig, ranges: KnobRanges) -> dict[str, CheapKnobs]:
    """The knobs of the two untuned genomes under `ranges.encoding` (the compare baselines)."""
    return {role: knobs_for(g, ranges)
            for role, g in zip(ROLES, untuned_genomes(search_cfg, ROLES))}


def role_of(genome: Genome, search_cfg: SearchConfig) -> Optional[str]:
    """"greedy_base" / "default_knobs" when `genome` is one of the untuned genomes (seeded,
    or found again by the search), else None."""
    if not genome.heavy.no_adapter:
        return None
    for role, ref in zip(ROLES, untuned_genomes(search_cfg, ROLES)):
        if genome.ca == ref.ca and genome.knob_genes == ref.knob_genes:
            return role
    return None
