"""GenerationPool on a real local Ray with the tiny model: same texts as in-process; restarts."""

from __future__ import annotations

import dataclasses
import time

import pytest

from coral.config import Config, GenerationConfig, ModelConfig, PoolConfig
from coral.model.generation import Generator
from coral.search.knobs import CheapKnobs
from coral.messages import GenerationRequest
from tests.model.test_generation import BITCOUNT, GCD, make_adapter

KNOBS = CheapKnobs(temperature=0.8, top_p=0.9, top_k=30, repetition_penalty=1.05,
                   max_new_tokens=10)


def pool_cfg() -> Config:
    """Tiny model, one generation actor on half a CPU (leaves room for other pools)."""
    cfg = dataclasses.replace(Config(), model=ModelConfig(base="tiny"),
                              generation=GenerationConfig(batch_size=4))
    return dataclasses.replace(cfg, ray=dataclasses.replace(
        cfg.ray, generation_pool=PoolConfig(size=1, num_cpus=0.5)))


@pytest.fixture(scope="module")
def refs(tmp_path_factory):
    """Two LoRA adapters and one DoRA adapter on disk."""
    root = tmp_path_factory.mktemp("pool_adapters")
    return [make_adapter(root, 11), make_adapter(root, 12), make_adapter(root, 13, dora=True)]


@pytest.fixture(scope="module")
def pool(ray_local):
    """One pool for the module (an actor start costs seconds of imports and model load)."""
    from actors.generation_pool import GenerationPool

    pool = GenerationPool(pool_cfg())
    yield pool
    pool.close()


def requests(refs, max_new_tokens: int = 10) -> list[GenerationRequest]:
    """Eight requests over base, LoRA and DoRA adapters; every other row greedy (top_k=1)."""
    ads = [None, refs[0], refs[1], refs[2], refs[0], None, refs[2], refs[1]]
    sampled = dataclasses.replace(KNOBS, max_new_tokens=max_new_tokens)
    greedy = dataclasses.replace(sampled, top_k=1)
    return [GenerationRequest(f"q{i}", f"g{i}", "gcd" if i % 2 else "bitcount",
                              GCD if i % 2 else BITCOUNT, ad, greedy if i % 2 else sampled,
                              seed=100 + i)
            for i, ad in enumerate(ads)]


def key(results):
    """What must match between Ray and in-process: ids, texts, token counts."""
    return [(r.request_id, r.text, r.new_tokens) for r in results]


def test_pool_matches_in_process_generator(ray_local, pool, refs):
    reqs = requests(refs)
    expected = Generator(pool_cfg()).generate(reqs)
    got = ray_local.get(pool.submit(reqs))
    assert key(got) == key(expected)
    # Another split into calls (hence other batches) gives the same texts too.
    parts = [pool.submit(reqs[:3]), pool.submit(reqs[3:])]
    assert key(sum(ray_local.get(parts), [])) == key(expected)
    assert [s["base_loads"] for s in pool.stats()] == [1]
    assert len(pool.actors) == pool.cfg.ray.generation_pool.size


def test_killed_actor_restarts_and_call_returns(ray_local, pool, refs):
    reqs = requests(refs, max_new_tokens=120)
    reqs += [dataclasses.replace(r, request_id=r.request_id + "b", seed=r.seed + 50)
             for r in reqs]
    actor = pool.actors[0]
    pid = ray_local.get(actor.pid.remote())           # constructed, model loaded
    ref = pool.submit(reqs)
    time.sleep(0.5)                                    # let the call start
    assert not ray_local.wait([ref], timeout=0)[0]     # killed mid-call, not after it
    ray_local.kill(actor, no_restart=False)
    got = ray_local.get(ref, timeout=300)
    assert ray_local.get(actor.pid.remote()) != pid   # a new process served it
    assert [r.request_id for r in got] == [r.request_id for r in reqs]
    # Rows are independent of their batch, so checking two rows in-process is enough.
    probe = [reqs[1], reqs[11]]                        # a LoRA row and a DoRA row
    assert key([got[1], got[11]]) == key(Generator(pool_cfg()).generate(probe))
