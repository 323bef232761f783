"""Adapter storage: one folder per adapter key under a root directory.

`DirectoryStore` keeps the adapters on a local disk (or a mounted volume):

    <root>/<key>/adapter_model.safetensors   peft weights
    <root>/<key>/adapter_config.json         peft config
    <root>/<key>/coral.json                  metadata: genes, base model, data version,
                                             checksum of the two files above, loss, seconds

A folder is assembled under a temporary name in the same root and renamed into place, so a
reader never sees a half-written adapter and a killed writer leaves only a `.tmp-*` folder.
`coral.json` is the last file written, and `verify` recomputes the checksum, so a partial or
corrupted adapter is detected rather than loaded.

Who uses one: in-process runs train into and generate from one store; on Ray only the
CacheActor writes the run's persistent store (on its own node: a local disk or the head's
volume) and generation actors keep their own `coral.adapters.local.LocalAdapters`; adapters
travel between nodes as `AdapterBundle` values (coral/adapters/bundle.py).

The public surface is the `AdapterStore` Protocol below plus `write_bundle`/`read_bundle`;
store management (listing, last use, garbage collection) builds on exactly these.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Optional, Protocol, runtime_checkable

from coral.adapters.bundle import META_FILE, WEIGHT_FILES, AdapterBundle, checksum_dir
from coral.config import Config
from coral.messages import AdapterRef

__all__ = ["AdapterStore", "DirectoryStore", "META_FILE", "WEIGHT_FILES", "checksum_dir",
           "default_root", "store_from_config"]


@runtime_checkable
class AdapterStore(Protocol):
    """Where adapters live: keyed folders with verified contents."""

    def local_path(self, key: str) -> Path: ...
    def uri(self, key: str) -> str: ...
    def exists(self, key: str) -> bool: ...
    def verify(self, key: str) -> bool: ...
    def ref(self, key: str) -> AdapterRef: ...
    def meta(self, key: str) -> dict: ...
    def keys(self) -> list[str]: ...
    def write(self, key: str, src_dir: Path, meta: dict) -> AdapterRef: ...
    def write_bundle(self, bundle: AdapterBundle) -> AdapterRef: ...
    def read_bundle(self, key: str) -> AdapterBundle: ...
    def remove(self, key: str) -> None: ...


class DirectoryStore:
    """An `AdapterStore` on a directory tree (local disk, shared FS, Modal volume)."""

    def __init__(self, root: str | os.PathLike, max_gb: Optional[float] = None) -> None:
        self.root = Path(root).expanduser().resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.max_gb = max_gb   # storage.max_gb: pruned after each write (coral.adapters.gc)

    def __repr__(self) -> str:
        return f"DirectoryStore({str(self.root)!r})"

    def __reduce__(self):
        # Picklable by root and size limit only, so it can be handed to Ray actors.
        return (DirectoryStore, (str(self.root), self.max_gb))

    @staticmethod
    def _check_key(key: str) -> str:
        """Keys are folder names: refuse anything that could escape the root."""
        if not key or "/" in key or "\\" in key or key.startswith("."):
            raise ValueError(f"invalid adapter key {key!r}")
        return key

    def local_path(self, key: str) -> Path:
        """Folder of the adapter `key` (it may not exist)."""
        return self.root / self._check_key(key)

    def uri(self, key: str) -> str:
        """Location string put into AdapterRef: the absolute folder path."""
        return str(self.local_path(key))

    def exists(self, key: str) -> bool:
        """Whether a completed adapter folder (with metadata) is present; not verified."""
        return (self.local_path(key) / META_FILE).is_file()

    def meta(self, key: str) -> dict:
        """The adapter's metadata (coral.json)."""
        return json.loads((self.local_path(key) / META_FILE).read_text())

    def verify(self, key: str) -> bool:
        """Whether the adapter is complete and its weights match the recorded checksum."""
        try:
            return checksum_dir(self.local_path(key)) == self.meta(key)["checksum"]
        except (FileNotFoundError, KeyError, json.JSONDecodeError):
            return False

    def ref(self, key: str) -> AdapterRef:
        """AdapterRef of a stored adapter (FileNotFoundError when absent)."""
        meta = self.meta(key)
        return AdapterRef(key=key, uri=self.uri(key), checksum=meta["checksum"],
                          status="ready", use_dora=bool(meta.get("genes", {}).get("use_dora")))

    def keys(self) -> list[str]:
        """Keys of completed adapter folders, sorted (temporary folders excluded)."""
        return sorted(p.name for p in self.root.iterdir()
                      if not p.name.startswith(".") and (p / META_FILE).is_file())

    def write(self, key: str, src_dir: Path, meta: dict) -> AdapterRef:
        """Copy a saved peft adapter into the store atomically, adding coral.json."""
        return self.write_bundle(AdapterBundle.from_dir(key, Path(src_dir), meta))

    def write_bundle(self, bundle: AdapterBundle) -> AdapterRef:
        """Store an adapter received as a value, atomically (an intact copy already there wins)."""
        target = self.local_path(bundle.key)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{bundle.key[:16]}-", dir=self.root))
        try:
            bundle.write_into(tmp)
            self._install(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        if self.max_gb is not None:
            from coral.adapters.gc import collect  # LRU first; never what a live run uses
            collect(self.root, max_gb=self.max_gb, keep={bundle.key})
        return self.ref(bundle.key)

    def read_bundle(self, key: str) -> AdapterBundle:
        """A stored adapter as a value (FileNotFoundError when absent; not verified here)."""
        folder = self.local_path(key)
        files = {name: (folder / name).read_bytes() for name in WEIGHT_FILES}
        return AdapterBundle(key, files, self.meta(key))

    def _install(self, tmp: Path, target: Path) -> None:
        """Rename `tmp` to `target`; a valid existing adapter wins, a broken one is replaced."""
        try:
            os.rename(tmp, target)
            return
        except OSError:
            if self.verify(target.name):
                return  # another writer finished the same key first: same content address
        trash = Path(tempfile.mkdtemp(prefix=f".old-{target.name[:16]}-", dir=self.root))
        os.rename(target, trash / "old")
        os.rename(tmp, target)
        shutil.rmtree(trash, ignore_errors=True)

    def remove(self, key: str) -> None:
        """Delete an adapter folder (used to clear a corrupt one before retraining)."""
        target = self.local_path(key)
        if target.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".old-{key[:16]}-", dir=self.root))
            try:
                os.rename(target, trash / "old")
            except FileNotFoundError:
                pass  # another process removed it first (gc, a concurrent retrain)
            shutil.rmtree(trash, ignore_errors=True)


def default_root(cfg: Config) -> Path:
    """storage.adapters, else <model cache root>/adapters."""
    from coral.model.loading import cache_root

    if cfg.storage.adapters:
        return Path(cfg.storage.adapters).expanduser()
    return cache_root(cfg.model.cache_dir) / "adapters"


def store_from_config(cfg: Config, root: Optional[str] = None) -> DirectoryStore:
    """The adapter store a run uses (`root` overrides the configured location)."""
    return DirectoryStore(root or default_root(cfg), max_gb=cfg.storage.max_gb)
