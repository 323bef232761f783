"""Where a generator finds the folder of an adapter it is asked to load.

`AdapterSource` is what `coral.model.generation.Generator` asks: "a local folder holding the
verified adapter of this ref". Two answers:

- in one process (tests, `coral run --in-process`, a GPU box without Ray) the store itself:
  `StoreSource` returns the store's folder after checking it;
- on Ray, every generation actor keeps `LocalAdapters`, its own least-recently-used directory
  on its node's disk, filled by a `fetch(ref) -> AdapterBundle` callable (the Ray side lives
  in actors/adapter_fetch.py and fetches through the object store). Nothing is shared between
  nodes, and every copy is checked against the ref's checksum before it is used.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import Callable, Optional, Protocol

from coral.adapters.bundle import AdapterBundle, AdapterCorrupt
from coral.adapters.store import DirectoryStore
from coral.messages import AdapterRef

log = logging.getLogger(__name__)


class AdapterSource(Protocol):
    """Local folders of adapters, for a generator to load them from."""

    def path(self, ref: AdapterRef) -> Path:
        """A local folder holding the adapter of `ref`, its weights matching `ref.checksum`."""


class StoreSource:
    """An `AdapterSource` reading a `DirectoryStore` this process can see."""

    def __init__(self, store: DirectoryStore) -> None:
        self.store = store

    def path(self, ref: AdapterRef) -> Path:
        """The store's folder of `ref` (FileNotFoundError if absent, AdapterCorrupt if altered)."""
        folder = self.store.local_path(ref.key)
        if not self.store.exists(ref.key):
            raise FileNotFoundError(f"adapter {ref.key} is not in {self.store}")
        if self.store.meta(ref.key).get("checksum") != ref.checksum or not self.store.verify(ref.key):
            raise AdapterCorrupt(f"adapter {ref.key[:12]} in {self.store} does not match its ref")
        return folder


Fetch = Callable[[AdapterRef], AdapterBundle]


class LocalAdapters:
    """A bounded LRU directory of adapters fetched from elsewhere: at most `keep` folders.

    Each instance gets its own directory `coral-adapters-<pid>-*` under `root` (None: the
    system temporary directory), so two actors on one node never evict each other's folders;
    it is removed by `close`, at exit, or by the next instance once the process is gone.
    """

    def __init__(self, fetch: Fetch, keep: int = 32, root: Optional[str] = None) -> None:
        if keep < 1:
            raise ValueError("keep must be >= 1")
        self.fetch = fetch
        self.keep = keep
        base = Path(root).expanduser() if root else Path(tempfile.gettempdir())
        base.mkdir(parents=True, exist_ok=True)
        _remove_orphans(base)
        self.store = DirectoryStore(tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-", dir=base))
        # Ray ends actors without running finalizers, hence also `_remove_orphans` above.
        atexit.register(self.close)
        self._order: "OrderedDict[str, None]" = OrderedDict()
        self.fetched = 0      # bundles received (tests and stats read these)
        self.hits = 0

    @property
    def root(self) -> Path:
        """The directory holding the fetched adapters."""
        return self.store.root

    def path(self, ref: AdapterRef) -> Path:
        """The local folder of `ref`, fetched (and checked) on a miss; evicts beyond `keep`."""
        if ref.key in self._order and self._intact(ref):
            self._order.move_to_end(ref.key)
            self.hits += 1
            return self.store.local_path(ref.key)
        bundle = self.fetch(ref).check(ref)
        self.store.remove(ref.key)           # a stale or damaged copy of the same key
        self.store.write_bundle(bundle)
        self._order[ref.key] = None
        self._order.move_to_end(ref.key)
        self.fetched += 1
        self._evict()
        log.debug("fetched adapter %s (%d bytes) into %s", ref.key[:12], bundle.nbytes, self.root)
        return self.store.local_path(ref.key)

    def _intact(self, ref: AdapterRef) -> bool:
        """Whether the local copy is still the adapter of `ref` (disks and users alter files)."""
        try:
            return self.store.meta(ref.key).get("checksum") == ref.checksum and \
                self.store.verify(ref.key)
        except FileNotFoundError:
            return False

    def _evict(self) -> None:
        """Drop the least recently used folders beyond `keep` (the newest always stays)."""
        while len(self._order) > self.keep:
            victim, _ = self._order.popitem(last=False)
            self.store.remove(victim)

    def keys(self) -> list[str]:
        """Keys held now, least recently used first."""
        return list(self._order)

    def close(self) -> None:
        """Remove the directory."""
        self._order.clear()
        shutil.rmtree(self.store.root, ignore_errors=True)


_PREFIX = "coral-adapters-"


def _remove_orphans(base: Path) -> None:
    """Remove the directories of processes that are gone (killed actors cannot clean up)."""
    for folder in base.glob(f"{_PREFIX}*-*"):
        pid = folder.name[len(_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    """Whether a process with this pid exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
