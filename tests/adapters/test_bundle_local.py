"""Adapters as values (AdapterBundle) and a worker's own LRU directory of fetched copies."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from coral.adapters.bundle import AdapterBundle, AdapterCorrupt, checksum_dir
from coral.adapters.local import LocalAdapters, StoreSource
from coral.adapters.store import DirectoryStore
from coral.messages import AdapterRef


def _bundle(key: str, payload: bytes) -> AdapterBundle:
    files = {"adapter_config.json": b'{"r": 4}', "adapter_model.safetensors": payload}
    src = {name: data for name, data in files.items()}
    from coral.adapters.bundle import checksum_files
    return AdapterBundle(key, src, {"genes": {"use_dora": False}, "key": key,
                                    "checksum": checksum_files(src)})


def _ref(b: AdapterBundle) -> AdapterRef:
    return AdapterRef(key=b.key, uri=f"object:{b.key}", checksum=b.checksum)


def test_bundle_round_trip_through_a_store_keeps_the_checksum(tmp_path):
    b = _bundle("k1", b"weights")
    assert b.verify() and b.nbytes == len(b'{"r": 4}') + 7
    store = DirectoryStore(tmp_path / "s")
    ref = store.write_bundle(b)
    assert ref.checksum == b.checksum == checksum_dir(store.local_path("k1"))
    back = store.read_bundle("k1")
    assert back.files == b.files and back.check(ref) is back
    again = AdapterBundle.from_dir("k1", store.local_path("k1"), {"genes": {}})
    assert again.checksum == b.checksum             # same bytes, same checksum, any route


def test_a_damaged_or_mislabelled_bundle_is_refused():
    b = _bundle("k1", b"weights")
    bad = AdapterBundle("k1", dict(b.files, **{"adapter_model.safetensors": b"weightz"}), b.meta)
    assert not bad.verify()
    with pytest.raises(AdapterCorrupt):
        bad.check(_ref(b))
    with pytest.raises(AdapterCorrupt):             # right bytes, but not the adapter asked for
        _bundle("k2", b"weights").check(_ref(b))
    assert not AdapterBundle("k1", {}, b.meta).verify()   # a file missing


def test_local_adapters_fetch_once_keep_lru_and_refetch_altered_copies(tmp_path):
    bundles = {k: _bundle(k, k.encode() * 3) for k in ("a", "b", "c")}
    calls = []

    def fetch(ref):
        calls.append(ref.key)
        return bundles[ref.key]
    local = LocalAdapters(fetch, keep=2, root=str(tmp_path))
    pa = local.path(_ref(bundles["a"]))
    assert pa.parent.parent == tmp_path and checksum_dir(pa) == bundles["a"].checksum
    assert local.path(_ref(bundles["a"])) == pa and calls == ["a"]      # a hit
    local.path(_ref(bundles["b"]))
    local.path(_ref(bundles["a"]))                  # a is now the most recently used
    local.path(_ref(bundles["c"]))                  # evicts b, the least recently used
    assert local.keys() == ["a", "c"] and not local.store.exists("b")
    (pa / "adapter_model.safetensors").write_bytes(b"tampered")
    assert checksum_dir(local.path(_ref(bundles["a"]))) == bundles["a"].checksum
    assert calls == ["a", "b", "c", "a"] and local.fetched == 4
    bundles["b"] = AdapterBundle("b", bundles["b"].files, dict(bundles["b"].meta, checksum="0"))
    with pytest.raises(AdapterCorrupt):             # a fetched copy that does not match
        local.path(AdapterRef(key="b", uri="", checksum="0"))
    local.close()
    assert not local.root.exists()


def test_directories_of_dead_processes_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    orphan = tmp_path / f"coral-adapters-{dead}-x1"
    mine = tmp_path / f"coral-adapters-{os.getpid()}-x2"
    orphan.mkdir()
    mine.mkdir()
    LocalAdapters(lambda ref: None, root=str(tmp_path)).close()
    assert not orphan.exists() and mine.exists()


def test_store_source_checks_the_store_copy(tmp_path):
    store = DirectoryStore(tmp_path)
    b = _bundle("k1", b"weights")
    ref = store.write_bundle(b)
    assert StoreSource(store).path(ref) == store.local_path("k1")
    (store.local_path("k1") / "adapter_model.safetensors").write_bytes(b"x")
    with pytest.raises(AdapterCorrupt):
        StoreSource(store).path(ref)
    with pytest.raises(FileNotFoundError):
        StoreSource(store).path(AdapterRef(key="nope", uri="", checksum=""))
