"""Adapter storage behind one small interface, so an object store can be added later.

`DirectoryStore` keeps one folder per adapter key under a root on local disk, a shared file
system or a mounted Modal volume:

    <root>/<key>/adapter_model.safetensors   peft weights
    <root>/<key>/adapter_config.json         peft config
    <root>/<key>/coral.json                  metadata: genes, base model, data version,
                                             checksum of the two files above, loss, seconds

A folder is assembled under a temporary name in the same root and renamed into place, so a
reader never sees a half-written adapter and a killed writer leaves only a `.tmp-*` folder.
`coral.json` is the last file written, and `verify` recomputes the checksum, so a partial or
corrupted adapter is detected rather than loaded.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Optional, Protocol, runtime_checkable

from coral.config import Config
from coral.messages import AdapterRef

META_FILE = "coral.json"
# What a generator needs to load the adapter; the checksum covers exactly these.
WEIGHT_FILES = ("adapter_config.json", "adapter_model.safetensors")


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
    def remove(self, key: str) -> None: ...


def checksum_dir(folder: Path) -> str:
    """sha256 over the weight files (names and contents); FileNotFoundError if one is missing."""
    digest = hashlib.sha256()
    for name in WEIGHT_FILES:
        digest.update(name.encode() + b"\0")
        with open(Path(folder) / name, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


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
        target = self.local_path(key)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{key[:16]}-", dir=self.root))
        try:
            for name in WEIGHT_FILES:
                shutil.copy2(Path(src_dir) / name, tmp / name)
            doc = dict(meta, key=key, checksum=checksum_dir(tmp))
            (tmp / META_FILE).write_text(json.dumps(doc, indent=2, sort_keys=True))
            self._install(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        if self.max_gb is not None:
            from coral.adapters.gc import collect  # LRU first; never what a live run uses
            collect(self.root, max_gb=self.max_gb, keep={key})
        return self.ref(key)

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
            os.rename(target, trash / "old")
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
