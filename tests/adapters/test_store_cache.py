"""Adapter store, in-process single-flight cache, and the Ray CacheActor over a TrainingPool."""

from __future__ import annotations

import threading
import time

import pytest

from coral.adapters.cache import AdapterCache
from coral.config import from_dict
from coral.search.genome import HeavyGenes
from coral.adapters.store import DirectoryStore, store_from_config

# Two-step trainings at a high rate: the tiny model's adapters take seconds.
GENES = HeavyGenes(r=4, lora_alpha=8.0, lora_dropout=0.0, target_modules=("q_proj", "v_proj"),
                   use_dora=False, steps=2, learning_rate=0.01)
OTHER = HeavyGenes(r=8, lora_alpha=16.0, lora_dropout=0.0, target_modules=("q_proj", "v_proj"),
                   use_dora=True, steps=2, learning_rate=0.01)


def _fake_adapter(folder, payload: bytes):
    """A folder with the two files the store manages (content is opaque to the store)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_config.json").write_text('{"r": 4}')
    (folder / "adapter_model.safetensors").write_bytes(payload)
    return folder


# --------------------------------------------------------------------------- store

def test_store_write_verify_and_partial_folders(tmp_path):
    store = DirectoryStore(tmp_path / "s")
    ref = store.write("k1", _fake_adapter(tmp_path / "src", b"abc"),
                      {"genes": OTHER.canonical()})
    assert ref.key == "k1" and ref.use_dora and store.verify("k1") and store.keys() == ["k1"]
    assert store.meta("k1")["checksum"] == ref.checksum and ref.uri == str(store.local_path("k1"))
    # corrupt weights -> verify fails; a missing file -> verify fails
    (store.local_path("k1") / "adapter_model.safetensors").write_bytes(b"abd")
    assert not store.verify("k1")
    (store.local_path("k1") / "adapter_model.safetensors").unlink()
    assert not store.verify("k1")
    # a folder without coral.json (a writer killed mid-way) is not a stored adapter
    _fake_adapter(store.root / "k2", b"x")
    assert store.keys() == ["k1"] and not store.exists("k2")
    # rewriting a broken key replaces it
    store.write("k1", _fake_adapter(tmp_path / "src2", b"new"), {"genes": GENES.canonical()})
    assert store.verify("k1") and not store.ref("k1").use_dora
    assert not [p for p in store.root.iterdir() if p.name.startswith(".")]
    with pytest.raises(ValueError):
        store.local_path("../escape")


def test_store_from_config_defaults_under_cache_dir(tmp_path):
    cfg = from_dict({"model": {"cache_dir": str(tmp_path)}})
    assert store_from_config(cfg).root == (tmp_path / "adapters").resolve()
    cfg = from_dict({"storage": {"adapters": str(tmp_path / "elsewhere")}})
    assert store_from_config(cfg).root == (tmp_path / "elsewhere").resolve()


# --------------------------------------------------------------------------- in-process cache

class _GatedTrainer:
    """A train function that blocks until released, so every request overlaps the training."""

    def __init__(self, store: DirectoryStore, tmp) -> None:
        self.store, self.tmp, self.calls = store, tmp, []
        self.release = threading.Event()

    def __call__(self, genes: HeavyGenes, key: str):
        self.calls.append(key)
        if genes.r == 99:
            raise RuntimeError("training blew up")
        self.release.wait(10)
        src = _fake_adapter(self.tmp / f"src-{key}-{len(self.calls)}", key.encode())
        return self.store.write(key, src, {"genes": genes.canonical()})


def test_in_process_single_flight_restart_and_corruption(tmp_path):
    store = DirectoryStore(tmp_path / "s")
    train = _GatedTrainer(store, tmp_path)
    cache = AdapterCache(store, train)
    results = []
    threads = [threading.Thread(target=lambda k=k: results.append(cache.get_with_outcome(k, GENES)))
               for k in ["a"] * 5 + ["b"]]
    for t in threads:
        t.start()
    while cache.stats()["misses"] + cache.stats()["joins"] + cache.stats()["hits"] < 6:
        time.sleep(0.01)
    train.release.set()
    for t in threads:
        t.join()
    stats = cache.stats()
    assert sorted(train.calls) == ["a", "b"] and stats["trainings"] == 2
    assert stats["joins"] == 4 and stats["misses"] == 2
    assert sorted(o for _, o in results) == ["joined"] * 4 + ["trained"] * 2
    # restart: a new cache over the same store hits without training
    again = AdapterCache(store, train)
    assert again.get_with_outcome("a", GENES)[1] == "hit" and len(train.calls) == 2
    # corruption is detected and the adapter retrained
    (store.local_path("a") / "adapter_model.safetensors").write_bytes(b"garbage")
    ref, outcome = again.get_with_outcome("a", GENES)
    assert outcome == "trained" and store.verify("a") and again.stats()["corrupt"] == 1


def test_in_process_failure_reaches_every_waiter(tmp_path):
    store = DirectoryStore(tmp_path)
    train = _GatedTrainer(store, tmp_path)
    cache = AdapterCache(store, train)
    bad = HeavyGenes(r=99, lora_alpha=8.0, lora_dropout=0.0, target_modules=("q_proj",),
                     use_dora=False)
    with pytest.raises(RuntimeError, match="blew up"):
        cache.get("bad", bad)
    assert cache.stats()["failures"] == 1 and cache.lookup("bad") is None


# --------------------------------------------------------------------------- Ray

def _ray_cfg(tmp_path):
    """Tiny model, two-step trainings, one training actor, store under tmp_path."""
    return from_dict({
        "model": {"base": "tiny"},
        "training": {"batch_size": 2, "max_length": 128, "examples": 8},
        "storage": {"adapters": str(tmp_path / "adapters")},
        "ray": {"training_pool": {"size": 1, "num_cpus": 1}, "max_restarts": 3,
                "max_task_retries": 1}})


class _Identity:
    """What the tests need of the pool: identity() and actors (the cache's own trainers)."""

    def __init__(self, cfg, actors, names) -> None:
        from coral.model.loading import resolve
        from coral.model.training import data_version

        self.actors, self.names = actors, names
        self._identity = (resolve(cfg.model).name, data_version(cfg.training))

    def identity(self) -> tuple[str, str]:
        """(base model name, data version) computed on the driver."""
        return self._identity


@pytest.fixture(scope="module")
def ray_cache(ray_local, tmp_path_factory):
    """(ray, cfg, pool view, cache actor handle) over a fresh store, built as the engine
    does: the driver keeps the training pool, the cache finds its actors by name."""
    from actors.cache_actor import make_cache
    from actors.training_pool import TrainingPool

    cfg = _ray_cfg(tmp_path_factory.mktemp("ray"))
    pool = TrainingPool(cfg, name_prefix="coral-cachetest-train")
    cache = make_cache(cfg, pool, name="coral-cachetest-cache")
    view = _Identity(cfg, ray_local.get(cache.training_actors.remote()), pool.names)
    yield ray_local, cfg, view, cache
    ray_local.kill(cache)
    pool.close()


def test_ray_single_flight_persistence_and_corruption(ray_cache):
    from actors.cache_actor import CacheActor

    ray, cfg, pool, cache = ray_cache
    base_model, version = pool.identity()
    key, other = GENES.key(base_model, version), OTHER.key(base_model, version)
    refs = [cache.get_ready.remote(key, GENES) for _ in range(5)] + [cache.get.remote(other, OTHER)]
    ready = ray.get(refs[:5])
    assert len({r.ref.checksum for r in ready}) == 1 and ray.get(refs[5]).use_dora
    stats = ray.get(cache.stats.remote())
    assert stats["trainings"] == 2 and stats["misses"] == 2
    assert stats["joins"] + stats["hits"] == 4 and stats["joins"] >= 1
    assert sorted(r.outcome for r in ready).count("trained") == 1

    # restart persistence: a new cache actor over the same store hits, trains nothing
    fresh = ray.remote(CacheActor).options(num_cpus=0).remote(cfg.storage.adapters, pool.names)
    assert ray.get(fresh.get_ready.remote(key, GENES)).outcome == "hit"
    assert ray.get(fresh.stats.remote())["trainings"] == 0

    # a corrupted adapter is detected and retrained
    from coral.adapters.store import DirectoryStore
    store = DirectoryStore(cfg.storage.adapters)
    (store.local_path(key) / "adapter_model.safetensors").write_bytes(b"broken")
    again = ray.get(fresh.get_ready.remote(key, GENES))
    assert again.outcome == "trained" and store.verify(key)
    fresh_stats = ray.get(fresh.stats.remote())
    assert fresh_stats["corrupt"] == 1 and fresh_stats["trainings"] == 1
    ray.kill(fresh)


def test_ray_cache_actor_restart_rebuilds_index(ray_cache):
    ray, cfg, pool, cache = ray_cache
    base_model, version = pool.identity()
    key = GENES.key(base_model, version)
    ray.get(cache.get.remote(key, GENES))
    _restart(ray, cache)
    found = ray.get(cache.lookup.remote(key), timeout=30)
    assert found is not None and found.key == key
    assert ray.get(cache.stats.remote())["trainings"] == 0   # a fresh actor, nothing retrained


def test_ray_training_failure_reaches_every_waiter(ray_cache):
    ray, cfg, pool, cache = ray_cache
    base_model, version = pool.identity()
    bad = HeavyGenes(r=4, lora_alpha=8.0, lora_dropout=0.0, target_modules=("no_such_proj",),
                     use_dora=False)
    key = bad.key(base_model, version)
    before = ray.get(cache.stats.remote())["failures"]
    refs = [cache.get.remote(key, bad) for _ in range(3)]
    for ref in refs:
        with pytest.raises(ray.exceptions.RayTaskError, match="no_such_proj|not found"):
            ray.get(ref)
    assert ray.get(cache.stats.remote())["failures"] == before + 1


def test_adapter_key_follows_data_version(ray_cache):
    from coral.model.training import data_version

    ray, cfg, pool, cache = ray_cache
    base_model, version = pool.identity()
    # the training actor keys adapters with the same data version as the driver
    assert tuple(ray.get(pool.actors[0].identity.remote())) == (base_model, version)
    assert version == data_version(cfg.training)
    other_cfg = from_dict({"training": {"batch_size": 2, "max_length": 128,
                                        "examples": 8, "data_seed": 7}})
    other_version = data_version(other_cfg.training)
    assert other_version != version
    assert GENES.key(base_model, version) != GENES.key(base_model, other_version)


def test_ray_adapters_travel_through_the_object_store(ray_cache, tmp_path):
    """A fetcher never reads the cache's store: it receives the bytes by object reference,
    checks them, keeps them in its own directory; a lost object is put again from the
    persisted copy, a lost persisted copy is retrained once."""
    from coral.adapters.bundle import AdapterBundle
    from coral.adapters.store import DirectoryStore

    ray, cfg, pool, cache = ray_cache
    base_model, version = pool.identity()
    key = GENES.key(base_model, version)
    ref = ray.get(cache.get.remote(key, GENES))
    from actors.adapter_fetch import ObjectStoreAdapters

    # a stand-in generation actor: just the AdapterSource a generation actor holds
    fetcher = ray.remote(ObjectStoreAdapters).options(num_cpus=0).remote(
        "coral-cachetest-cache", 2, str(tmp_path / "local"))
    folder = str(ray.get(fetcher.path.remote(ref)))
    assert folder.startswith(str(tmp_path / "local")) and DirectoryStore(
        folder.rsplit("/", 1)[0]).verify(key)
    assert str(ray.get(fetcher.path.remote(ref))) == folder       # second use: local hit
    stats = ray.get(fetcher.stats.remote())
    assert stats["fetched"] == 1 and stats["local_hits"] == 1 and stats["local_keys"] == [key]

    # the cache dies: the object it owned is lost; the restarted cache puts it again
    [obj] = ray.get(cache.bundle.remote(key))       # a reference, not yet fetched here
    _restart(ray, cache)
    # A large object dies with its owner (ObjectLostError for whoever fetches it then); Ray
    # may inline a small one into the reply. Either way the fetcher reports it and the
    # restarted cache puts the persisted copy again.
    [again] = ray.get(cache.reload.remote(key, obj.hex()), timeout=60)
    assert isinstance(ray.get(again), AdapterBundle) and ray.get(again).checksum == ref.checksum
    assert ray.get(again).verify() and ray.get(cache.stats.remote())["restored"] == 1

    # the persisted copy is damaged and the object dropped: trained again, exactly once
    assert ray.get(cache.get_ready.remote(key, GENES)).outcome == "hit"  # genes learnt again
    store = DirectoryStore(cfg.storage.adapters)
    (store.local_path(key) / "adapter_model.safetensors").write_bytes(b"broken")
    before = ray.get(cache.stats.remote())["trainings"]
    [fresh] = ray.get(cache.reload.remote(key, again.hex()))
    assert ray.get(fresh).verify() and store.verify(key)
    assert ray.get(cache.stats.remote())["trainings"] == before + 1
    ray.get(cache.reload.remote(key, again.hex()))   # a stale report changes nothing
    assert ray.get(cache.stats.remote())["trainings"] == before + 1
    ray.kill(fetcher)


def _pid(ray, actor) -> int:
    """Process id of an actor (any actor: Ray's __ray_call__ runs a function in it)."""
    import os
    return ray.get(actor.__ray_call__.remote(lambda self: os.getpid()), timeout=60)


def _restart(ray, actor, seconds: float = 90.0) -> None:
    """Kill `actor` with restart and wait until a new process answers (a kill takes effect
    asynchronously: a call right after it may still reach the old process)."""
    old = _pid(ray, actor)
    ray.kill(actor, no_restart=False)
    deadline = time.time() + seconds
    while True:
        try:
            if _pid(ray, actor) != old:
                return
        except ray.exceptions.RayActorError:
            pass
        if time.time() > deadline:
            raise TimeoutError("the actor was not restarted")
        time.sleep(0.5)
