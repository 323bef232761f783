"""Genomes: heavy genes (adapter shape, peft's names), a cellular-automaton seed and direct
knob genes (used instead of the CA under `knobs.encoding: direct`)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from coral.config import CAConfig, GeneChoices, SearchConfig


@dataclass(frozen=True)
class HeavyGenes:
    """What decides the adapter: changing any of these means training a new one.

    `steps` 0 means no adapter at all: the base model as it is (nothing is trained, there is
    no adapter key, generation runs the bare base model); the other genes are then latent.
    """

    r: int
    lora_alpha: float
    lora_dropout: float
    target_modules: tuple[str, ...]
    use_dora: bool
    steps: int = 20
    learning_rate: float = 2e-4

    @property
    def no_adapter(self) -> bool:
        """The base model as it is: no training, no adapter."""
        return int(self.steps) == 0

    def canonical(self) -> dict:
        """Canonical plain form: numbers normalised, module list sorted and de-duplicated."""
        if self.no_adapter:
            return {"steps": 0}
        return {
            "r": int(self.r),
            "lora_alpha": float(self.lora_alpha),
            "lora_dropout": round(float(self.lora_dropout), 6),
            "target_modules": sorted(set(self.target_modules)),
            "use_dora": bool(self.use_dora),
            "steps": int(self.steps),
            "learning_rate": float(f"{float(self.learning_rate):.6g}"),
        }

    def key(self, base_model: str, data_version: str) -> Optional[str]:
        """Content address of the adapter: sha256 of canonical JSON of genes + model + data;
        None without an adapter (steps 0)."""
        if self.no_adapter:
            return None
        doc = {"genes": self.canonical(), "base_model": base_model, "data_version": data_version}
        text = json.dumps(doc, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class CASeed:
    """Initial grid (row-major 0/1), outer-totalistic rule (birth/survival counts), steps."""

    width: int
    height: int
    cells: tuple[int, ...]
    birth: tuple[int, ...]
    survival: tuple[int, ...]
    steps: int


HEAVY = ("r", "lora_alpha", "lora_dropout", "target_modules", "use_dora", "steps",
         "learning_rate")
# The searched sampling knobs, in the order of Genome.knob_genes and of the CA's handles
# (coral.search.knobs maps them into their configured ranges).
KNOBS = ("temperature", "top_p", "top_k", "repetition_penalty", "max_new_tokens_factor")
# Standard deviation of a direct knob gene's mutation (genes live in [0, 1]).
KNOB_MUTATION_SD = 0.1


@dataclass(frozen=True)
class Genome:
    """One individual: a deterministic id, heavy genes, a CA seed and direct knob genes."""

    id: str
    heavy: HeavyGenes
    ca: CASeed
    knob_genes: tuple[float, ...] = (0.5,) * len(KNOBS)


# --------------------------------------------------------------------------- operations
# Every draw goes through the caller's numpy Generator, in a fixed order, so a run is
# reproducible from its seed. Values are converted to plain Python types for JSON.

BIRTH_COUNTS = tuple(range(1, 9))    # 0 excluded: "born from nothing" floods the torus
SURVIVAL_COUNTS = tuple(range(0, 9))
# Chance that a count is in a random rule table (a table is re-drawn until valid).
_RULE_DENSITY = 0.35
# A birth table needs a count <= this, else almost every grid dies at the first step.
_MAX_LOWEST_BIRTH = 4


def _pick(rng, options: Sequence[Any]) -> Any:
    """One element of a sequence, uniformly (index draw: keeps tuples as tuples)."""
    return options[int(rng.integers(len(options)))]


def _pick_other(rng, options: Sequence[Any], current: Any) -> Any:
    """A uniformly drawn option different from `current` when there is one."""
    others = [o for o in options if o != current]
    return _pick(rng, others) if others else current


def random_heavy(choices: GeneChoices, rng) -> HeavyGenes:
    """Heavy genes, each drawn uniformly from its configured choices."""
    return HeavyGenes(
        r=int(_pick(rng, choices.r)),
        lora_alpha=float(_pick(rng, choices.lora_alpha)),
        lora_dropout=float(_pick(rng, choices.lora_dropout)),
        target_modules=tuple(_pick(rng, choices.target_modules)),
        use_dora=bool(_pick(rng, choices.use_dora)),
        steps=int(_pick(rng, choices.steps)),
        learning_rate=float(_pick(rng, choices.learning_rate)),
    )


def _heavy(values: dict) -> HeavyGenes:
    """HeavyGenes from plain values (types normalised)."""
    return HeavyGenes(r=int(values["r"]), lora_alpha=float(values["lora_alpha"]),
                      lora_dropout=float(values["lora_dropout"]),
                      target_modules=tuple(values["target_modules"]),
                      use_dora=bool(values["use_dora"]), steps=int(values["steps"]),
                      learning_rate=float(values["learning_rate"]))


def valid_rule(birth: Sequence[int], survival: Sequence[int]) -> bool:
    """Whether a rule is usable: birth non-empty, without 0, lowest count <= 4; counts 0..8."""
    return (len(birth) > 0 and min(birth) >= 1 and min(birth) <= _MAX_LOWEST_BIRTH
            and max(birth) <= 8 and all(0 <= c <= 8 for c in survival)
            and list(birth) == sorted(set(birth)) and list(survival) == sorted(set(survival)))


def _random_rule(rng) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """A valid birth/survival pair: each count included with probability _RULE_DENSITY."""
    while True:
        birth = tuple(c for c, u in zip(BIRTH_COUNTS, rng.random(len(BIRTH_COUNTS)))
                      if u < _RULE_DENSITY)
        survival = tuple(c for c, u in zip(SURVIVAL_COUNTS, rng.random(len(SURVIVAL_COUNTS)))
                         if u < _RULE_DENSITY)
        if valid_rule(birth, survival):
            return birth, survival


def random_ca(cfg: CAConfig, rng) -> CASeed:
    """A CA seed: cells live with probability cfg.density, a valid random rule, random steps."""
    cells = tuple(int(v) for v in (rng.random(cfg.width * cfg.height) < cfg.density))
    birth, survival = _random_rule(rng)
    steps = int(rng.integers(cfg.steps_min, cfg.steps_max + 1))
    return CASeed(width=cfg.width, height=cfg.height, cells=cells, birth=birth,
                  survival=survival, steps=steps)


def random_genome(search_cfg: SearchConfig, rng, genome_id: str) -> Genome:
    """A genome drawn uniformly: heavy genes from the choices, a random CA seed, knob genes.

    Both knob encodings are drawn whichever is configured, so a run with `knobs.encoding:
    direct` draws the same heavy genes as one with `ca` (a fair comparison).
    """
    heavy = random_heavy(search_cfg.genes, rng)
    ca = random_ca(search_cfg.ca, rng)
    units = tuple(float(u) for u in rng.random(len(KNOBS)))
    return Genome(id=genome_id, heavy=heavy, ca=ca, knob_genes=units)


def _mutate_heavy(heavy: HeavyGenes, choices: GeneChoices, rate: float, rng) -> HeavyGenes:
    """Re-draw each heavy gene with probability `rate` (to a different choice if any)."""
    values = {}
    for name in HEAVY:
        current = getattr(heavy, name)
        options = getattr(choices, name)
        mutate = rng.random() < rate
        # A value outside the choices (config changed since a checkpoint) is always replaced.
        if mutate or current not in options:
            current = _pick_other(rng, options, current)
        values[name] = current
    return _heavy(values)


def _toggle_rule(ca: CASeed, rng) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Add or remove one count in the birth or survival table, keeping the rule valid."""
    moves = [("b", c) for c in BIRTH_COUNTS] + [("s", c) for c in SURVIVAL_COUNTS]
    valid = []
    for table, c in moves:
        birth, survival = set(ca.birth), set(ca.survival)
        target = birth if table == "b" else survival
        target.symmetric_difference_update({c})
        pair = (tuple(sorted(birth)), tuple(sorted(survival)))
        if valid_rule(*pair):
            valid.append(pair)
    return _pick(rng, valid) if valid else (ca.birth, ca.survival)


def _mutate_ca(ca: CASeed, cfg: CAConfig, rate: float, rng) -> CASeed:
    """With probability `rate` each: flip a few cells, toggle a rule count, perturb steps."""
    cells, birth, survival, steps = list(ca.cells), ca.birth, ca.survival, ca.steps
    if rng.random() < rate:
        n = len(cells)
        flips = int(rng.integers(1, max(2, n // 16) + 1))
        for i in rng.choice(n, size=flips, replace=False):
            cells[int(i)] = 1 - cells[int(i)]
    if rng.random() < rate:
        birth, survival = _toggle_rule(ca, rng)
    if rng.random() < rate:
        delta = int(rng.integers(1, 5)) * (1 if rng.random() < 0.5 else -1)
        steps = steps + delta
    steps = int(min(cfg.steps_max, max(cfg.steps_min, steps)))
    return CASeed(width=ca.width, height=ca.height, cells=tuple(cells), birth=tuple(birth),
                  survival=tuple(survival), steps=steps)


def _mutate_units(units: Sequence[float], rate: float, rng) -> tuple[float, ...]:
    """Each knob gene moved by N(0, KNOB_MUTATION_SD) with probability `rate`, reflected
    back into [0, 1] (reflection keeps the genes uniform, clipping would pile them at 0, 1)."""
    out = []
    for u in units:
        if rng.random() < rate:
            u = abs(float(u) + float(rng.normal(0.0, KNOB_MUTATION_SD))) % 2.0
            u = 2.0 - u if u > 1.0 else u
        out.append(float(u))
    return tuple(out)


def mutate(genome: Genome, search_cfg: SearchConfig, rng, new_id: str) -> Genome:
    """Per-gene mutation with probability search_cfg.mutation_rate; returns a new genome."""
    rate = search_cfg.mutation_rate
    heavy = _mutate_heavy(genome.heavy, search_cfg.genes, rate, rng)
    ca = _mutate_ca(genome.ca, search_cfg.ca, rate, rng)
    return Genome(id=new_id, heavy=heavy, ca=ca,
                  knob_genes=_mutate_units(genome.knob_genes, rate, rng))


def crossover(a: Genome, b: Genome, rng, new_id: str) -> Genome:
    """One child: uniform crossover of heavy genes and knob genes; CA = b's row band spliced
    into a's grid.

    Each rule table and the step count come whole from either parent (uniformly).
    """
    if (a.ca.width, a.ca.height) != (b.ca.width, b.ca.height):
        raise ValueError("crossover needs CA grids of one size")
    heavy = HeavyGenes(**{name: getattr(a.heavy if rng.random() < 0.5 else b.heavy, name)
                          for name in HEAVY})
    w, h = a.ca.width, a.ca.height
    r0, r1 = sorted(int(v) for v in rng.integers(0, h + 1, size=2))
    cells = a.ca.cells[: r0 * w] + b.ca.cells[r0 * w: r1 * w] + a.ca.cells[r1 * w:]
    birth = (a.ca if rng.random() < 0.5 else b.ca).birth
    survival = (a.ca if rng.random() < 0.5 else b.ca).survival
    # A birth table from one parent with a survival table from the other is always valid:
    # validity constrains each table on its own.
    steps = (a.ca if rng.random() < 0.5 else b.ca).steps
    ca = CASeed(width=w, height=h, cells=cells, birth=birth, survival=survival, steps=steps)
    units = tuple((a if rng.random() < 0.5 else b).knob_genes[i] for i in range(len(KNOBS)))
    return Genome(id=new_id, heavy=heavy, ca=ca, knob_genes=units)


def make_id(seed: int, generation: int, index: int) -> str:
    """Deterministic genome id from the run seed, generation and index in that generation."""
    digest = hashlib.sha256(f"{seed}:{generation}:{index}".encode()).hexdigest()[:8]
    return f"g{generation:03d}-{index:03d}-{digest}"


def is_valid(genome: Genome, search_cfg: SearchConfig) -> bool:
    """Whether every gene lies within the configured choices and CA bounds."""
    g, ch, ca, cfg = genome.heavy, search_cfg.genes, genome.ca, search_cfg.ca
    return (g.r in ch.r and g.lora_alpha in ch.lora_alpha and g.lora_dropout in ch.lora_dropout
            and tuple(g.target_modules) in ch.target_modules and g.use_dora in ch.use_dora
            and g.steps in ch.steps and g.learning_rate in ch.learning_rate
            and (ca.width, ca.height) == (cfg.width, cfg.height)
            and len(ca.cells) == ca.width * ca.height and set(ca.cells) <= {0, 1}
            and cfg.steps_min <= ca.steps <= cfg.steps_max and valid_rule(ca.birth, ca.survival)
            and len(genome.knob_genes) == len(KNOBS)
            and all(0.0 <= u <= 1.0 for u in genome.knob_genes))


def genome_to_dict(genome: Genome) -> dict:
    """Plain JSON form of a genome (cells as a 0/1 string to keep checkpoints small)."""
    ca = genome.ca
    return {
        "id": genome.id,
        "heavy": {"r": genome.heavy.r, "lora_alpha": genome.heavy.lora_alpha,
                  "lora_dropout": genome.heavy.lora_dropout,
                  "target_modules": list(genome.heavy.target_modules),
                  "use_dora": genome.heavy.use_dora, "steps": genome.heavy.steps,
                  "learning_rate": genome.heavy.learning_rate},
        "ca": {"width": ca.width, "height": ca.height,
               "cells": "".join(str(c) for c in ca.cells),
               "birth": list(ca.birth), "survival": list(ca.survival), "steps": ca.steps},
        "knob_genes": list(genome.knob_genes),
    }


def genome_from_dict(doc: dict) -> Genome:
    """Inverse of `genome_to_dict` (lists become tuples, so it compares equal)."""
    h, c = doc["heavy"], doc["ca"]
    heavy = _heavy(h)
    ca = CASeed(width=int(c["width"]), height=int(c["height"]),
                cells=tuple(int(ch) for ch in c["cells"]),
                birth=tuple(int(v) for v in c["birth"]),
                survival=tuple(int(v) for v in c["survival"]), steps=int(c["steps"]))
    return Genome(id=str(doc["id"]), heavy=heavy, ca=ca,
                  knob_genes=tuple(float(u) for u in doc["knob_genes"]))
