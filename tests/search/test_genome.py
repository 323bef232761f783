"""Genome operations: sampling, mutation and crossover stay within the configured choices."""

from __future__ import annotations

import json

import numpy as np
import pytest

from coral.config import CAConfig, GeneChoices, SearchConfig
from coral.search.genome import (HeavyGenes, crossover, genome_from_dict, genome_to_dict, is_valid,
                          make_id, mutate, random_ca, random_genome, random_heavy, valid_rule)

CHOICES = GeneChoices(r=(2, 8, 32), lora_alpha=(4.0, 64.0), lora_dropout=(0.0, 0.2),
                      target_modules=(("q_proj",), ("q_proj", "v_proj"), ("o_proj", "k_proj")),
                      use_dora=(False, True))
CFG = SearchConfig(genes=CHOICES, ca=CAConfig(width=12, height=10, steps_min=5, steps_max=9))


def test_heavy_key_ignores_number_and_sequence_spelling():
    a = HeavyGenes(r=16, lora_alpha=16, lora_dropout=0.05,
                   target_modules=["v_proj", "q_proj"], use_dora=False)
    b = HeavyGenes(r=16, lora_alpha=16.0, lora_dropout=0.0500000001,
                   target_modules=("q_proj", "v_proj", "q_proj"), use_dora=False)
    c = HeavyGenes(r=16, lora_alpha=16.0, lora_dropout=0.05,
                   target_modules=("q_proj", "v_proj"), use_dora=True)
    assert a.key("m", "d1") == b.key("m", "d1")
    assert a.key("m", "d1") != c.key("m", "d1")          # adapter type is part of the key
    assert a.key("m", "d1") != a.key("m", "d2")
    assert a.key("m", "d1") != a.key("other", "d1")


def test_random_heavy_draws_every_choice_of_every_gene():
    rng = np.random.default_rng(0)
    drawn = [random_heavy(CHOICES, rng) for _ in range(300)]
    for name in ("r", "lora_alpha", "lora_dropout", "target_modules", "use_dora"):
        assert {getattr(g, name) for g in drawn} == set(getattr(CHOICES, name))
    assert all(isinstance(g.target_modules, tuple) for g in drawn)


def test_random_ca_respects_config_and_rule_validity():
    cfg = CFG.ca
    rng = np.random.default_rng(1)
    seeds = [random_ca(cfg, rng) for _ in range(300)]
    for s in seeds:
        assert (s.width, s.height) == (12, 10) and len(s.cells) == 120
        assert cfg.steps_min <= s.steps <= cfg.steps_max
        assert 0 not in s.birth and s.birth and valid_rule(s.birth, s.survival)
    density = np.mean([np.mean(s.cells) for s in seeds])
    assert abs(density - cfg.density) < 0.03
    assert {s.steps for s in seeds} == set(range(cfg.steps_min, cfg.steps_max + 1))
    assert len({(s.birth, s.survival) for s in seeds}) > 100      # rules are varied


def test_mutation_preserves_validity_and_changes_genes():
    rng = np.random.default_rng(2)
    cfg = SearchConfig(genes=CHOICES, ca=CFG.ca, mutation_rate=0.5)
    g = random_genome(cfg, rng, "g0")
    changed = {"heavy": 0, "cells": 0, "rule": 0, "steps": 0}
    seen_dora, seen_modules = set(), set()
    for i in range(300):
        child = mutate(g, cfg, rng, f"m{i}")
        assert child.id == f"m{i}" and is_valid(child, cfg)
        changed["heavy"] += child.heavy != g.heavy
        changed["cells"] += child.ca.cells != g.ca.cells
        changed["rule"] += (child.ca.birth, child.ca.survival) != (g.ca.birth, g.ca.survival)
        changed["steps"] += child.ca.steps != g.ca.steps
        seen_dora.add(child.heavy.use_dora)
        seen_modules.add(child.heavy.target_modules)
        g = child
    assert all(count > 50 for count in changed.values()), changed
    # adapter type and target modules are genes too: every choice turns up along the chain
    assert seen_dora == {False, True}
    assert seen_modules == set(CHOICES.target_modules)


def test_mutation_rate_zero_is_identity_except_id():
    rng = np.random.default_rng(3)
    cfg = SearchConfig(genes=CHOICES, ca=CFG.ca, mutation_rate=0.0)
    g = random_genome(cfg, rng, "a")
    child = mutate(g, cfg, rng, "b")
    assert (child.heavy, child.ca) == (g.heavy, g.ca) and child.id == "b"


def test_mutation_repairs_genes_outside_changed_choices():
    rng = np.random.default_rng(4)
    g = random_genome(CFG, rng, "a")
    narrower = SearchConfig(genes=GeneChoices(r=(64,), lora_alpha=(128.0,)), ca=CFG.ca,
                            mutation_rate=0.0)
    child = mutate(g, narrower, rng, "b")
    assert child.heavy.r == 64 and child.heavy.lora_alpha == 128.0


def test_crossover_mixes_parents_and_stays_valid():
    rng = np.random.default_rng(5)
    a = random_genome(CFG, rng, "a")
    b = random_genome(CFG, rng, "b")
    while a.heavy == b.heavy:
        b = random_genome(CFG, rng, "b")
    from_b_cells = 0
    for i in range(200):
        child = crossover(a, b, rng, f"c{i}")
        assert is_valid(child, CFG)
        for name in ("r", "lora_alpha", "lora_dropout", "target_modules", "use_dora"):
            assert getattr(child.heavy, name) in (getattr(a.heavy, name), getattr(b.heavy, name))
        assert child.ca.birth in (a.ca.birth, b.ca.birth)
        assert child.ca.survival in (a.ca.survival, b.ca.survival)
        assert all(c in (x, y) for c, x, y in zip(child.ca.cells, a.ca.cells, b.ca.cells))
        from_b_cells += child.ca.cells != a.ca.cells
    assert from_b_cells > 50


def test_crossover_rejects_grids_of_different_size():
    rng = np.random.default_rng(6)
    a = random_genome(CFG, rng, "a")
    b = random_genome(SearchConfig(ca=CAConfig(width=8, height=8)), rng, "b")
    with pytest.raises(ValueError, match="one size"):
        crossover(a, b, rng, "c")


def test_make_id_is_deterministic_and_distinct():
    assert make_id(7, 2, 5) == make_id(7, 2, 5)
    assert make_id(7, 2, 5).startswith("g002-005-")
    ids = {make_id(s, g, i) for s in (0, 1) for g in range(4) for i in range(10)}
    assert len(ids) == 80


def test_genome_dict_round_trip_through_json():
    rng = np.random.default_rng(8)
    for i in range(20):
        g = random_genome(CFG, rng, f"x{i}")
        doc = json.loads(json.dumps(genome_to_dict(g)))
        assert genome_from_dict(doc) == g
