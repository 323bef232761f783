"""Strict loading of config files into `Config`, overrides, plain-data form, key docs.

Conversion is driven by the dataclass annotations: each annotation kind has one converter
(`_CONVERTERS`, scalars in `_SCALARS`), so a reader finds the rule for a type in one place.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from pathlib import Path
from typing import Any, Callable, Iterator, Literal

import yaml

from coral.config.fields import ConfigError, ConfigValueError, Range
from coral.config.run import Config


class _Bad(Exception):
    """Internal: a validation failure at a key path."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")


def _convert_optional(value: Any, args: tuple, path: str) -> Any:
    """Optional[T]: None stays None, anything else is a T."""
    if value is None and type(None) in args:
        return None
    inner = [a for a in args if a is not type(None)]
    return _convert(value, inner[0], path)


def _convert_literal(value: Any, args: tuple, path: str) -> Any:
    """Literal[...]: one of the listed values."""
    if isinstance(value, bool) and "on" in args and "off" in args:
        value = "on" if value else "off"   # YAML 1.1 reads a bare on/off as a boolean
    if value not in args:
        raise _Bad(path, f"must be one of {', '.join(map(repr, args))}, got {value!r}")
    return value


def _convert_tuple(value: Any, args: tuple, path: str) -> tuple:
    """tuple[T, ...]: a YAML list of T."""
    if not isinstance(value, (list, tuple)):
        raise _Bad(path, f"must be a list, got {type(value).__name__} {value!r}")
    return tuple(_convert(v, args[0], f"{path}[{i}]") for i, v in enumerate(value))


_CONVERTERS: dict[Any, Callable[[Any, tuple, str], Any]] = {
    typing.Union: _convert_optional, types.UnionType: _convert_optional,
    Literal: _convert_literal, tuple: _convert_tuple,
}


def _to_range(value: Any, path: str) -> Range:
    """[low, high] (or {low, high}) with low <= high."""
    if isinstance(value, dict):
        value = [value.get("low"), value.get("high")]
    if not (isinstance(value, (list, tuple)) and len(value) == 2):
        raise _Bad(path, f"must be [low, high], got {value!r}")
    low, high = (_to_float(v, path) for v in value)
    if low > high:
        raise _Bad(path, f"low must be <= high, got [{low}, {high}]")
    return Range(low, high)


def _to_bool(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise _Bad(path, f"must be true or false, got {value!r}")
    return value


def _to_int(value: Any, path: str) -> int:
    """An integer; 3.0 is accepted as 3, True is not."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Bad(path, f"must be an integer, got {value!r}")
    return value


def _to_float(value: Any, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Bad(path, f"must be a number, got {value!r}")
    return float(value)


def _to_str(value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise _Bad(path, f"must be a string, got {value!r}")
    return value


_SCALARS: dict[Any, Callable[[Any, str], Any]] = {
    Range: _to_range, bool: _to_bool, int: _to_int, float: _to_float, str: _to_str,
}


def _convert(value: Any, tp: Any, path: str) -> Any:
    """Check `value` against annotation `tp`, returning the frozen form; raise _Bad."""
    origin = typing.get_origin(tp)
    if origin in _CONVERTERS:
        return _CONVERTERS[origin](value, typing.get_args(tp), path)
    if tp in _SCALARS:
        return _SCALARS[tp](value, path)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise _Bad(path, f"must be a mapping, got {type(value).__name__} {value!r}")
        return _build(tp, value, path)
    raise TypeError(f"unsupported config annotation {tp!r} at {path}")


def _check_range(value: Any, meta: dict, path: str) -> None:
    """Apply ge/le/gt/lt/nonempty metadata to a converted value."""
    if meta.get("nonempty") and len(value) == 0:
        raise _Bad(path, "must not be empty")
    rules = (("ge", lambda v, b: v >= b, ">="), ("le", lambda v, b: v <= b, "<="),
             ("gt", lambda v, b: v > b, ">"), ("lt", lambda v, b: v < b, "<"))
    for item in value if isinstance(value, tuple) else (value,):
        if not isinstance(item, (int, float)) or isinstance(item, bool):
            continue
        for name, holds, word in rules:
            bound = meta.get(name)
            if bound is not None and not holds(item, bound):
                raise _Bad(path, f"must be {word} {bound:g}, got {item:g}")


# Keys that moved: an old config names them, the error says where they went.
MOVED = {"training.steps": "search.genes.steps (a list of choices; 0 = no adapter)",
         "training.learning_rate": "search.genes.learning_rate (a list of choices)"}


def _build(cls: type, raw: dict, prefix: str) -> Any:
    """Construct dataclass `cls` from mapping `raw`, strictly, then run its `check`."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "source"}
    kwargs = {}
    for key, value in raw.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if key not in fields and path in MOVED:
            raise _Bad(path, f"moved to {MOVED[path]}")
        if key not in fields:
            raise _Bad(path, f"unknown key (allowed: {', '.join(fields)})")
        converted = _convert(value, hints[key], path)
        _check_range(converted, dict(fields[key].metadata), path)
        kwargs[key] = converted
    obj = cls(**kwargs)
    try:
        getattr(obj, "check", lambda: None)()
    except ConfigValueError as exc:
        raise _Bad(f"{prefix}.{exc.key}" if prefix else exc.key, exc.message) from None
    return obj


def apply_overrides(raw: dict, overrides: list[str] | tuple[str, ...]) -> dict:
    """Apply ``a.b.c=value`` overrides (value parsed as YAML) to a raw mapping copy."""
    out = _deepcopy(raw)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item}: expected KEY.PATH=VALUE")
        key, text = item.split("=", 1)
        parts = key.strip().split(".")
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item}: {part} is not a section")
        node[parts[-1]] = yaml.safe_load(text)
    return out


def _deepcopy(raw: Any) -> Any:
    """Copy nested dicts/lists of plain YAML values."""
    if isinstance(raw, dict):
        return {k: _deepcopy(v) for k, v in raw.items()}
    if isinstance(raw, list):
        return [_deepcopy(v) for v in raw]
    return raw


def from_dict(raw: dict, source: str = "<dict>") -> Config:
    """Validate a raw mapping into a `Config`; errors name `source` and the key path."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: top level must be a mapping, got {type(raw).__name__}")
    try:
        cfg = _build(Config, raw, "")
    except _Bad as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return dataclasses.replace(cfg, source=source)


def load(path: str | os.PathLike, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load a YAML config file strictly, applying ``--set`` overrides first."""
    source = str(path)
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read: {exc.strerror}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: invalid YAML: {str(exc).splitlines()[0]}") from None
    return from_dict(apply_overrides(raw or {}, overrides), source)


def _plain(obj: Any) -> Any:
    """Plain YAML/JSON data of a config value."""
    if isinstance(obj, Range):
        return [obj.low, obj.high]
    if dataclasses.is_dataclass(obj):
        return {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)
                if f.name != "source"}
    if isinstance(obj, tuple):
        return [_plain(v) for v in obj]
    return obj


def to_dict(cfg: Config) -> dict:
    """Plain-data form of a config (for snapshots and Ray payloads); loads back equal."""
    return _plain(cfg)


def _type_name(tp: Any) -> str:
    """Short human name of an annotation: int, float, [low, high], list of str, one of ..."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return f"{_type_name(inner[0])} or null"
    if origin is Literal:
        return " | ".join(map(str, args))
    if origin is tuple:
        return f"list of {_type_name(args[0])}"
    return "[low, high]" if tp is Range else getattr(tp, "__name__", str(tp))


def describe(section: Any = None, prefix: str = "") -> Iterator[tuple[str, str, Any, str]]:
    """Every leaf key of a config section (default: the whole `Config` with its defaults):
    (dotted key, type, default, doc), in declaration order."""
    section = Config() if section is None else section
    hints = typing.get_type_hints(type(section))
    for f in dataclasses.fields(section):
        if f.name == "source":
            continue
        key, tp, value = f"{prefix}{f.name}", hints[f.name], getattr(section, f.name)
        if dataclasses.is_dataclass(tp) and tp is not Range:
            yield from describe(value, key + ".")
        else:
            yield key, _type_name(tp), _plain(value), f.metadata["doc"]
