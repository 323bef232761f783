"""The text-generation backend extension point: a small Protocol and a registry chosen by config.

What the GenerationPool actors (actors/generation_pool.py) and the in-process pools
(coral/run/pools.py) need from a backend is only this: turn a batch of `GenerationRequest`s into
`GenerationResult`s (same order), keep adapters resident, report counters and let go of the
device. `generation.backend` names the backend; the Hugging Face resident `Generator`
(coral/model/generation.py, name ``hf``) is the one that ships.

Adding one (vLLM, say) is one new file plus its registration, with no edit to the engine or
the actors:

- write ``coral/model/vllm_backend.py`` with a class taking the run `Config` and implementing
  `GenerationBackend`, and add ``"vllm": "coral.model.vllm_backend:VLLMGenerator"`` to
  `BUILTIN` below; or
- keep the file outside CORAL and set ``generation.backend: mypkg.vllm_backend:VLLMGenerator``
  (a ``module:attribute`` path every Ray worker can import); or
- `register_backend("vllm", factory)` at import time of a module the process loads (tests do
  this; a name registered this way is known only in the process that registered it, so Ray
  actors need one of the two ways above).

Backends are looked up by name when a pool is built, never at import time, so the HF stack
(torch, transformers, peft) is imported only by the processes that generate.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

from coral.messages import AdapterRef, GenerationRequest, GenerationResult

# Shipped backends, as "module:attribute" so that naming one imports nothing else.
BUILTIN: dict[str, str] = {"hf": "coral.model.generation:Generator"}

BackendFactory = Callable[[Any], "GenerationBackend"]
_registered: dict[str, BackendFactory] = {}


@runtime_checkable
class GenerationBackend(Protocol):
    """A resident model that serves generation requests for many adapters.

    Contract (the engine's resume and the Ray-vs-in-process equivalence rely on it): a row's
    text depends only on its prompt, adapter, knobs and seed, never on the other rows of the
    batch or on which process serves it; each row runs with exactly its one adapter (or the
    bare base model when `adapter` is None); a missing or not-ready adapter raises.
    """

    @property
    def resident(self) -> tuple[str, ...]:
        """Keys of the adapters loaded now, least recently used first."""

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        """One result per request, same order."""

    def ensure_resident(self, refs: Sequence[AdapterRef]) -> None:
        """Load these adapters ahead of use (evicting others as the backend's limit says)."""

    def stats(self) -> dict:
        """Counters as plain data: base_loads, adapter_loads, resident, device, dtype."""

    def close(self) -> None:
        """Release the model and the device memory it holds."""


def register_backend(name: str, factory: BackendFactory) -> None:
    """Make `generation.backend: <name>` build backends with `factory(cfg)` in this process."""
    if not name or ":" in name:
        raise ValueError(f"backend name {name!r}: use a plain name (':' marks module paths)")
    _registered[name] = factory


def known_backends() -> tuple[str, ...]:
    """Names usable as `generation.backend` in this process (module paths aside)."""
    return tuple(sorted({*BUILTIN, *_registered}))


def _import_path(path: str) -> BackendFactory:
    """The attribute named by "package.module:attribute"."""
    module, _, attr = path.partition(":")
    if not module or not attr:
        raise ValueError(f"generation.backend: {path!r} is not of the form module:attribute")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"generation.backend: cannot import {path!r}: {exc}") from exc


def backend_factory(name: str) -> BackendFactory:
    """The factory of a backend name (registered, shipped, or a module:attribute path)."""
    if name in _registered:
        return _registered[name]
    if name in BUILTIN:
        return _import_path(BUILTIN[name])
    if ":" in name:
        return _import_path(name)
    raise ValueError(f"generation.backend: unknown backend {name!r}; known: "
                     f"{', '.join(known_backends())} (or a module:attribute path)")


def create_backend(cfg: Any, adapters: Any = None) -> GenerationBackend:
    """Build the backend that `cfg.generation.backend` names, for the whole run config.

    `adapters` (a coral.adapters.local.AdapterSource: `path(ref)` -> a local folder with the
    checked adapter) is where a backend on Ray finds adapters trained on other nodes; it is
    passed as the keyword `adapters` only when given, so a factory of `cfg` alone still works
    in-process.
    """
    factory = backend_factory(cfg.generation.backend)
    return factory(cfg) if adapters is None else factory(cfg, adapters=adapters)
