"""How config sections declare their keys: `setting(...)` with range rules and a doc line.

Each section module (search, judge, model, run) is a set of frozen dataclasses whose fields are
declared with `setting`; the loader (coral.config.loader) reads the metadata to validate, and
`coral config show --doc` prints the docs. A section class may define `check(self)`, raising
`ConfigValueError(key, message)` for rules that relate several of its fields.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


class ConfigError(ValueError):
    """A configuration file or override is invalid; the message is one line."""


class ConfigValueError(Exception):
    """A rule broken inside one section: `key` is relative to the section."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key, self.message = key, message


def setting(default: Any = dataclasses.MISSING, *, doc: str, ge: float | None = None,
            le: float | None = None, gt: float | None = None, lt: float | None = None,
            nonempty: bool = False) -> Any:
    """Declare a config key: its default, range rules checked by the loader, and its meaning."""
    if isinstance(default, (list, dict)):
        raise TypeError("use tuples for sequence defaults")
    if not doc:
        raise TypeError("every config key needs a doc")
    meta = {"ge": ge, "le": le, "gt": gt, "lt": lt, "nonempty": nonempty, "doc": doc}
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class Range:
    """A closed numeric interval ``[low, high]``; YAML form ``[low, high]``."""

    low: float
    high: float
