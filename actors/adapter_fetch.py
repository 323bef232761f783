"""How a generation actor gets an adapter trained on another node: through Ray's object store.

`ObjectStoreAdapters` is the `coral.adapters.local.AdapterSource` a GenerationPool actor hands
its `Generator`. On a miss it asks the CacheActor (found by name) for the object reference of
the adapter's `AdapterBundle`, fetches the bytes (Ray copies them from whichever node holds
them) and writes them into the actor's own `LocalAdapters` directory, checked against the
ref's checksum. When the object was lost (its node died, or the cache actor restarted and
with it the owner of the object), the cache is asked to put it again from its persisted copy
or to retrain it; the error surfaces if even that fails.

It is constructed from plain values (the cache's name, the directory settings), so the
generation actor's constructor has no object-store arguments and restarts cleanly.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

import ray

from coral.adapters.bundle import AdapterBundle
from coral.adapters.local import LocalAdapters
from coral.messages import AdapterRef

log = logging.getLogger(__name__)


class ObjectStoreAdapters:
    """AdapterSource of one generation actor: fetched copies in a local LRU directory."""

    def __init__(self, cache_name: str, keep: int = 32, root: Optional[str] = None) -> None:
        self.cache_name, self.keep, self.root = cache_name, keep, root
        self._local: Optional[LocalAdapters] = None
        self._cache: Any = None

    def __getstate__(self) -> dict:
        # Only the settings travel: the directory and the handle belong to one process.
        return {"cache_name": self.cache_name, "keep": self.keep, "root": self.root}

    def __setstate__(self, state: dict) -> None:
        self.__init__(**state)

    @property
    def local(self) -> LocalAdapters:
        """This process's directory (created on first use)."""
        if self._local is None:
            self._local = LocalAdapters(self._fetch, self.keep, self.root)
        return self._local

    def path(self, ref: AdapterRef) -> Path:
        """A local folder holding the adapter of `ref` (fetched and checked on a miss)."""
        return self.local.path(ref)

    def _fetch(self, ref: AdapterRef) -> AdapterBundle:
        """The bundle of `ref` from the object store; lost objects are put again once."""
        if self._cache is None:
            self._cache = ray.get_actor(self.cache_name)
        [obj] = ray.get(self._cache.bundle.remote(ref.key))
        try:
            return ray.get(obj)
        except ray.exceptions.ObjectLostError as exc:   # includes OwnerDiedError
            log.warning("adapter %s: object lost (%s); asking the cache again",
                        ref.key[:12], type(exc).__name__)
            [obj] = ray.get(self._cache.reload.remote(ref.key, obj.hex()))
            return ray.get(obj)

    def stats(self) -> dict:
        """Fetches, local hits, the directory and the node it is on."""
        local = self._local
        return {"fetched": local.fetched if local else 0, "local_hits": local.hits if local else 0,
                "local_dir": str(local.root) if local else None,
                "local_keys": local.keys() if local else [],
                "node": ray.get_runtime_context().get_node_id()}

    def close(self) -> None:
        """Remove the local directory."""
        if self._local is not None:
            self._local.close()
