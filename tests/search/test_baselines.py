"""The untuned model inside the search space: no-adapter genes, the greedy knob region,
generation 0 seeded with both untuned genomes, elitism keeping the best so far."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from coral.config import ConfigError, KnobRanges, SearchConfig, from_dict
from coral.messages import Scores
from coral.search.baselines import ROLES, role_of, untuned_genomes, untuned_knobs
from coral.search.genome import HeavyGenes, genome_from_dict, genome_to_dict, is_valid, mutate
from coral.search.knobs import knobs_for
from coral.search.strategies import make_strategy

GENES = dict(r=4, lora_alpha=8.0, lora_dropout=0.0, target_modules=("q_proj",), use_dora=False)


def test_steps_zero_is_no_adapter_and_steps_and_rate_are_in_the_key():
    bare = HeavyGenes(**GENES, steps=0, learning_rate=1e-3)
    assert bare.no_adapter and bare.key("m", "d") is None
    assert bare.canonical() == HeavyGenes(**dict(GENES, r=8), steps=0).canonical()
    keys = {HeavyGenes(**GENES, steps=s, learning_rate=lr).key("m", "d")
            for s in (8, 16) for lr in (2e-4, 1e-3)}
    assert len(keys) == 4 and None not in keys


@pytest.mark.parametrize("encoding", ["ca", "direct"])
def test_untuned_genomes_decode_greedy_and_default_in_both_encodings(encoding):
    search = SearchConfig()
    ranges = KnobRanges(encoding=encoding)
    greedy, default = untuned_genomes(search, ["a", "b"])
    assert greedy.heavy.no_adapter and default.heavy.no_adapter
    assert is_valid(greedy, search) and is_valid(default, search)
    g, d = knobs_for(greedy, ranges), knobs_for(default, ranges)
    assert g.greedy and g.top_k == 1 and g.repetition_penalty == 1.0
    assert not d.greedy
    assert d.temperature == pytest.approx(0.7, abs=0.01)   # the middle of [0.2, 1.2]
    mid = (ranges.max_new_tokens_factor.low + ranges.max_new_tokens_factor.high) / 2
    assert g.max_new_tokens_factor == pytest.approx(mid, abs=0.01)
    assert untuned_knobs(search, ranges) == {"greedy_base": g, "default_knobs": d}
    assert [role_of(x, search) for x in (greedy, default)] == list(ROLES)
    trained = dataclasses.replace(greedy, heavy=HeavyGenes(**GENES))
    assert role_of(trained, search) is None


def test_the_greedy_region_is_reached_by_random_genomes_in_both_encodings():
    search = SearchConfig()
    strat = make_strategy(SearchConfig(population_size=200, seed_population=False), seed=3)
    genomes = strat.ask()
    for encoding in ("ca", "direct"):
        share = np.mean([knobs_for(g, KnobRanges(encoding=encoding)).greedy for g in genomes])
        assert 0.05 < share < 0.3, (encoding, share)   # about greedy_fraction (0.15)
    off = KnobRanges(greedy_fraction=0.0)
    assert not any(knobs_for(g, off).greedy for g in genomes)
    assert search.seed_population and 0 in search.genes.steps   # both on by default


def test_generation_zero_is_seeded_and_elitism_keeps_the_best_so_far():
    cfg = SearchConfig(population_size=4, gates=())
    strat = make_strategy(cfg, seed=5)
    first = strat.ask()
    assert [role_of(g, cfg) for g in first[:2]] == list(ROLES)
    assert all(role_of(g, cfg) is None for g in first[2:])
    # The greedy untuned genome fixes the most; the others are better on the secondary
    # objectives, so plain NSGA-II crowding alone could drop it from a full front.
    scores = {first[0].id: Scores(fixed=0.5)}
    scores.update({g.id: Scores(fixed=0.25 + 0.01 * i, bugfix=0.9, syntax=1.0 - 0.1 * i)
                   for i, g in enumerate(first[1:])})
    strat.tell(scores)
    for _ in range(3):
        kids = strat.ask()
        assert all(role_of(g, cfg) is None or g.id not in {x.id for x in first} for g in kids)
        strat.tell({g.id: Scores(fixed=0.1, bugfix=1.0, syntax=1.0, style=1.0) for g in kids})
        assert first[0].id in {g.id for g, _ in strat.population}


def test_seeding_needs_the_no_adapter_value_and_old_configs_say_where_steps_went():
    with pytest.raises(ConfigError, match="seed_population: the untuned model needs 0"):
        from_dict({"search": {"genes": {"steps": [8]}}})
    from_dict({"search": {"genes": {"steps": [8]}, "seed_population": False}})
    with pytest.raises(ConfigError, match="training.steps: moved to search.genes.steps"):
        from_dict({"training": {"steps": 8}})


def test_steps_and_learning_rate_mutate_and_round_trip():
    cfg = SearchConfig(mutation_rate=1.0)
    g = untuned_genomes(cfg, ["a"])[0]
    rng = np.random.default_rng(0)
    children = [mutate(g, cfg, rng, f"c{i}") for i in range(20)]
    assert {c.heavy.steps for c in children} == {10, 20}   # rate 1: always another choice
    assert len({c.heavy.learning_rate for c in children}) > 1
    assert all(genome_from_dict(genome_to_dict(c)) == c for c in children)


def test_config_and_messages_do_not_import_the_search():
    """The two import circles are gone: config -> strategies, messages -> knobs."""
    import subprocess
    import sys

    code = ("import sys, coral.config, coral.messages; "
            "print(sorted(m for m in sys.modules if m.startswith('coral.search')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


def test_config_doc_documents_the_search_evaluation_and_seeding(capsys):
    from coral.cli import main

    assert main(["config", "show", "--doc"]) == 0
    doc = capsys.readouterr().out
    for key in ("search.evaluation", "search.seed_population", "search.racing_first",
                "search.racing_keep", "search.genes.steps", "search.genes.learning_rate",
                "knobs.greedy_fraction"):
        assert f"\n{key} " in doc, key
    assert "successive halving" in doc and "untuned model" in doc
