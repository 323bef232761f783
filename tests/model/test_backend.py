"""The generation backend extension point: a backend defined here runs through both pools.

`UnchangedBackend` is a real (if useless) backend: it answers every request with the buggy
program unchanged, the degenerate answer the judge must score lowest. It is registered from
this module, built by the in-process pools and by a GenerationPool actor on a real local Ray
(which imports it by module path), with no edit to the engine or the actors.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import pytest

from coral import config as cfgmod
from coral.messages import AdapterRef, GenerationRequest, GenerationResult
from coral.model import backend as backends
from coral.search.knobs import CheapKnobs

KNOBS = CheapKnobs(temperature=0.7, top_p=0.9, top_k=20, repetition_penalty=1.0,
                   max_new_tokens=8)
GCD = "def gcd(a, b):\n    if b == 0:\n        return a\n    else:\n        return gcd(a % b, b)\n"


class UnchangedBackend:
    """Answers with the input program; keeps the adapters it was asked for resident."""

    def __init__(self, cfg) -> None:
        self.cfg = cfg
        self.loaded: list[str] = []
        self.closed = False

    @property
    def resident(self) -> tuple[str, ...]:
        return tuple(self.loaded)

    def ensure_resident(self, refs: Sequence[AdapterRef]) -> None:
        self.loaded += [r.key for r in refs if r.key not in self.loaded]

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        self.ensure_resident([r.adapter for r in requests if r.adapter is not None])
        return [GenerationResult(r.request_id, r.genome_id, r.problem,
                                 f"```python\n{r.buggy_source}```", new_tokens=0, seconds=0.0,
                                 meta={"backend": "unchanged"}) for r in requests]

    def stats(self) -> dict:
        return {"backend": "unchanged", "base_loads": 0, "adapter_loads": len(self.loaded),
                "resident": list(self.loaded), "device": "none", "dtype": "none"}

    def close(self) -> None:
        self.closed = True


def requests(n: int = 3) -> list[GenerationRequest]:
    """n requests for gcd, over two adapter keys and the base model."""
    ads = [None, AdapterRef("k1", "/nowhere/k1", ""), AdapterRef("k2", "/nowhere/k2", "")]
    return [GenerationRequest(f"r{i}", f"g{i}", "gcd", GCD, ads[i % 3], KNOBS, seed=i)
            for i in range(n)]


def cfg_with(tmp_path, quixbugs_dir, backend: str) -> cfgmod.Config:
    """The default config on gcd with the given backend."""
    return cfgmod.from_dict({
        "dataset": {"quixbugs": str(quixbugs_dir), "problems": ["gcd", "bitcount"]},
        "model": {"base": "tiny"}, "storage": {"adapters": str(tmp_path / "adapters")},
        "generation": {"backend": backend}})


def test_unknown_and_malformed_backends_are_refused():
    with pytest.raises(ValueError, match="unknown backend 'vllm'.*hf"):
        backends.backend_factory("vllm")
    with pytest.raises(ValueError, match="cannot import"):
        backends.backend_factory("tests.model.no_such_module:X")
    with pytest.raises(ValueError, match="plain name"):
        backends.register_backend("a:b", UnchangedBackend)
    with pytest.raises(cfgmod.ConfigError, match="generation.backend"):
        cfgmod.from_dict({"generation": {"backend": "not a name"}})


def test_hf_is_the_default_and_satisfies_the_protocol():
    from coral.model.generation import Generator

    assert cfgmod.Config().generation.backend == "hf"
    assert backends.backend_factory("hf") is Generator
    for name in ("generate", "ensure_resident", "stats", "close", "resident"):
        assert hasattr(Generator, name), name
    assert isinstance(UnchangedBackend(None), backends.GenerationBackend)


def test_registered_backend_runs_through_in_process_pools(tmp_path, quixbugs_dir):
    from coral.judge.quixbugs import load_problems, select
    from coral.run.pools import in_process_pools

    built: list[UnchangedBackend] = []

    def factory(cfg):
        built.append(UnchangedBackend(cfg))
        return built[-1]

    backends.register_backend("unchanged", factory)
    cfg = cfg_with(tmp_path, quixbugs_dir, "unchanged")
    pools = in_process_pools(cfg, select(load_problems(quixbugs_dir), ["gcd"]))
    try:
        reqs = requests()
        got = pools.get(pools.submit_generate(reqs))
    finally:
        pools.close()
    assert [r.request_id for r in got] == [r.request_id for r in reqs]
    assert all(GCD in r.text and r.meta["backend"] == "unchanged" for r in got)
    assert built[0].resident == ("k1", "k2") and built[0].closed


def test_backend_by_module_path_runs_in_a_ray_generation_pool(ray_local, tmp_path,
                                                              quixbugs_dir):
    from actors.generation_pool import GenerationPool

    cfg = cfg_with(tmp_path, quixbugs_dir, "tests.model.test_backend:UnchangedBackend")
    cfg = dataclasses.replace(cfg, ray=dataclasses.replace(
        cfg.ray, generation_pool=cfgmod.PoolConfig(size=1, num_cpus=0.5)))
    pool = GenerationPool(cfg)
    try:
        got = pool.generate(requests(4))
        stats = pool.stats()
    finally:
        pool.close()
    assert [r.text for r in got] == [f"```python\n{GCD}```"] * 4
    assert stats[0]["backend"] == "unchanged" and stats[0]["resident"] == ["k1", "k2"]
