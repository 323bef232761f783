"""Search strategies: the `SearchStrategy` Protocol (ask / tell / state) and its registry.

`search.strategy` names a registered class. A new strategy (islands, MAP-Elites, ...) is one
new module with a class decorated `@register("name")`, imported below (or by the user's code
before the config is loaded); the engine only talks to the Protocol.
"""

from __future__ import annotations

from typing import Callable

from coral.search.strategies.base import PopulationStrategy, SearchStrategy, StateRefused

_REGISTRY: dict[str, type] = {}


def register(name: str) -> Callable[[type], type]:
    """Class decorator: make a strategy available as `search.strategy: name`."""
    def add(cls: type) -> type:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"search strategy {name!r} is already registered "
                             f"({_REGISTRY[name].__module__}.{_REGISTRY[name].__name__})")
        cls.name = name
        _REGISTRY[name] = cls
        return cls
    return add


def unregister(name: str) -> None:
    """Remove a registered strategy (tests that register their own clean up with it)."""
    _REGISTRY.pop(name, None)


def strategy_names() -> tuple[str, ...]:
    """Registered strategy names, in registration order."""
    return tuple(_REGISTRY)


def check_strategy(cfg) -> None:
    """Raise ConfigError unless `cfg.search.strategy` is registered (checked where a run or a
    comparison starts, and by `coral config check`: the config package does not import the
    search)."""
    from coral.config import ConfigError

    if cfg.search.strategy not in _REGISTRY:
        raise ConfigError(f"{cfg.source}: search.strategy: must be one of "
                          f"{', '.join(map(repr, _REGISTRY))}, got {cfg.search.strategy!r}")


def make_strategy(search_cfg, seed: int) -> SearchStrategy:
    """A fresh strategy of the configured kind."""
    try:
        cls = _REGISTRY[search_cfg.strategy]
    except KeyError:
        raise ValueError(f"unknown search strategy {search_cfg.strategy!r} "
                         f"(registered: {', '.join(_REGISTRY)})") from None
    return cls(search_cfg, seed)


# The built-in strategies register themselves on import.
from coral.search.strategies import nsga2, random  # noqa: E402,F401

__all__ = ["PopulationStrategy", "SearchStrategy", "StateRefused", "check_strategy",
           "make_strategy",
           "register", "strategy_names", "unregister"]
