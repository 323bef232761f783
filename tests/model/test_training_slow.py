"""Real SmolLM2-135M-Instruct: a LoRA and a DoRA adapter trained by the TrainingPool and
stored through the CacheActor, then both used by the GenerationPool in batched calls to write
fixes for two QuixBugs problems, which the sandbox judges (slow: a few minutes on 2 CPU cores)."""

from __future__ import annotations

import math

import pytest

from coral.config import from_dict
from coral.search.genome import HeavyGenes
from coral.adapters.store import DirectoryStore

pytestmark = pytest.mark.slow

LORA = HeavyGenes(r=8, lora_alpha=16.0, lora_dropout=0.05, target_modules=("q_proj", "v_proj"),
                  use_dora=False, steps=6, learning_rate=1e-3)
DORA = HeavyGenes(r=4, lora_alpha=8.0, lora_dropout=0.0,
                  target_modules=("q_proj", "k_proj", "v_proj", "o_proj"), use_dora=True,
                  steps=6, learning_rate=1e-3)


def test_smollm2_lora_and_dora_through_cache_actor(ray_local, tmp_path, quixbugs_dir):
    from actors.cache_actor import make_cache
    from actors.generation_pool import GenerationPool
    from actors.training_pool import TrainingPool

    ray = ray_local
    cfg = from_dict({
        "model": {"base": "smollm2"},
        "training": {"batch_size": 2, "max_length": 256, "examples": 32},
        "storage": {"adapters": str(tmp_path / "adapters")},
        "ray": {"training_pool": {"size": 1, "num_cpus": 1}}})
    pool = TrainingPool(cfg)
    cache = make_cache(cfg, pool=pool)
    try:
        base_model, version = pool.identity()
        assert base_model.startswith("SmolLM2-135M-Instruct")
        keys = {name: g.key(base_model, version) for name, g in (("lora", LORA), ("dora", DORA))}
        refs = {name: cache.get_ready.remote(keys[name], g)
                for name, g in (("lora", LORA), ("dora", DORA))}
        again = cache.get_ready.remote(keys["lora"], LORA)
        ready = {name: ray.get(ref, timeout=900) for name, ref in refs.items()}
        assert ray.get(again).outcome in ("joined", "hit")
        store = DirectoryStore(cfg.storage.adapters)
        for name, r in ready.items():
            assert r.outcome == "trained" and store.verify(r.ref.key)
            meta = store.meta(r.ref.key)
            assert meta["genes"]["use_dora"] is (name == "dora")
            assert len(meta["loss"]) == 6 and all(math.isfinite(v) for v in meta["loss"])
            # the adapter learns the answer format: the probe batch's loss goes down
            assert meta["probe_loss_after"] < meta["probe_loss_before"]
            print(name, meta["seconds"], meta["probe_loss_before"], meta["probe_loss_after"],
                  meta["loss"])
        stats = ray.get(cache.stats.remote())
        assert stats["trainings"] == 2 and stats["failures"] == 0
        _generate_and_judge(cfg, {n: r.ref for n, r in ready.items()}, quixbugs_dir, ray,
                            GenerationPool)
    finally:
        ray.kill(cache)
        pool.close()


def _generate_and_judge(cfg, refs, quixbugs_dir, ray, pool_cls):
    """Fixes for two problems with both adapters in one pool call; each is judged."""
    from coral.config import SandboxConfig
    from coral.model.extract import extract_function
    from coral.search.knobs import CheapKnobs
    from coral.messages import Candidate, CandidateStatus, GenerationRequest
    from coral.judge.quixbugs import load_problems
    from coral.judge.sandbox import Judge

    problems = {p.name: p for p in load_problems(quixbugs_dir) if p.name in ("gcd", "bitcount")}
    knobs = CheapKnobs(temperature=0.3, top_p=0.95, top_k=40, repetition_penalty=1.05,
                       max_new_tokens=96)
    requests = [GenerationRequest(f"{a}-{p}", a, p, problems[p].buggy_source, refs[a], knobs,
                                  seed=i)
                for i, (a, p) in enumerate((a, p) for a in sorted(refs) for p in sorted(problems))]
    gen = pool_cls(cfg)
    try:
        results = ray.get(gen.submit(requests), timeout=900)
        stats = gen.stats()
    finally:
        gen.close()
    assert [r.request_id for r in results] == [q.request_id for q in requests]
    # one base model, both adapters resident, LoRA rows batched together, DoRA per adapter
    assert stats[0]["base_loads"] == 1 and sorted(stats[0]["resident"]) == sorted(
        r.key for r in refs.values())
    assert all(r.new_tokens > 0 and r.text for r in results)
    with Judge(tuple(problems.values()), SandboxConfig()) as judge:
        for r in results:
            code = extract_function(r.text, problems[r.problem].function)
            cand = Candidate(r.genome_id, r.problem, code or "", r.text)
            outcome = judge.judge(cand)
            assert isinstance(outcome.status, CandidateStatus)
            print(r.request_id, outcome.status.value, f"{outcome.passed}/{outcome.total}",
                  repr(r.text[:200]))
