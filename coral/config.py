"""Run configuration: YAML loaded once, strictly, into nested frozen dataclasses.

Every field is declared here with its type and allowed range; nothing else in the
project reads YAML. An unknown key, a wrong type or an out-of-range value raises
`ConfigError` with one line naming the file and the key path, e.g.
``configs/x.yaml: search.population_size: must be >= 2, got 0``.
Command-line overrides (``--set search.generations=5``) are applied to the raw
mapping before validation, so they are checked by the same rules.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import yaml


class ConfigError(ValueError):
    """A configuration file or override is invalid; the message is one line."""


def _f(default: Any = dataclasses.MISSING, *, ge: float | None = None, le: float | None = None,
       gt: float | None = None, lt: float | None = None, nonempty: bool = False, **kw: Any) -> Any:
    """Declare a field with range metadata checked by the loader."""
    meta = {"ge": ge, "le": le, "gt": gt, "lt": lt, "nonempty": nonempty}
    if isinstance(default, (list, dict, tuple)) and not isinstance(default, tuple):
        raise TypeError("use tuples for sequence defaults")
    return field(default=default, metadata=meta, **kw)


@dataclass(frozen=True)
class Range:
    """A closed numeric interval ``[low, high]``; YAML form ``[low, high]``."""

    low: float
    high: float


@dataclass(frozen=True)
class RunConfig:
    """Attributes: name of the run directory, master seed, root of run directories."""

    name: str = "coral"
    seed: int = _f(0, ge=0)
    runs_dir: str = "runs"
    held_out_eval: bool = True
    held_out_top_k: int = _f(3, ge=1)


@dataclass(frozen=True)
class DatasetConfig:
    """Attributes: QuixBugs checkout (null: $CORAL_QUIXBUGS), problem subset, split."""

    quixbugs: Optional[str] = None
    problems: tuple[str, ...] = ()
    held_out_fraction: float = _f(0.25, ge=0.0, lt=1.0)
    split_seed: int = _f(0, ge=0)
    max_train_problems: int = _f(0, ge=0)


@dataclass(frozen=True)
class GeneChoices:
    """Attributes: the values each heavy gene may take (peft's field names)."""

    r: tuple[int, ...] = _f((4, 8, 16), nonempty=True)
    lora_alpha: tuple[float, ...] = _f((8.0, 16.0, 32.0), nonempty=True)
    lora_dropout: tuple[float, ...] = _f((0.0, 0.05, 0.1), nonempty=True)
    target_modules: tuple[tuple[str, ...], ...] = _f(
        (("q_proj", "v_proj"), ("q_proj", "k_proj", "v_proj", "o_proj")), nonempty=True)
    use_dora: tuple[bool, ...] = _f((False, True), nonempty=True)


@dataclass(frozen=True)
class CAConfig:
    """Attributes: torus size, initial live density, range of steps run."""

    width: int = _f(16, ge=4, le=256)
    height: int = _f(16, ge=4, le=256)
    density: float = _f(0.35, gt=0.0, lt=1.0)
    steps_min: int = _f(8, ge=1)
    steps_max: int = _f(32, ge=1)


@dataclass(frozen=True)
class GateConfig:
    """Attributes: optional survival threshold on one objective, rising over generations."""

    enabled: bool = False
    objective: Literal["bugfix", "style", "security", "runtime", "syntax"] = "bugfix"
    schedule: Literal["sigmoid", "linear", "sqrt"] = "linear"
    start: float = _f(0.0, ge=0.0, le=1.0)
    end: float = _f(0.5, ge=0.0, le=1.0)


@dataclass(frozen=True)
class SearchConfig:
    """Attributes: strategy, budget and variation rates of the evolutionary search."""

    strategy: Literal["nsga2", "random"] = "nsga2"
    population_size: int = _f(8, ge=2)
    generations: int = _f(3, ge=1)
    crossover_rate: float = _f(0.9, ge=0.0, le=1.0)
    mutation_rate: float = _f(0.2, ge=0.0, le=1.0)
    genes: GeneChoices = GeneChoices()
    ca: CAConfig = CAConfig()
    gate: GateConfig = GateConfig()


@dataclass(frozen=True)
class KnobRanges:
    """Attributes: the range each sampling knob is mapped into (transformers' names)."""

    temperature: Range = Range(0.2, 1.2)
    top_p: Range = Range(0.7, 1.0)
    top_k: Range = Range(5, 100)
    repetition_penalty: Range = Range(1.0, 1.3)
    max_new_tokens: Range = Range(96, 256)


@dataclass(frozen=True)
class ModelConfig:
    """Attributes: base model (smollm2 | tiny | hub id | folder | .gguf), device, dtype, cache."""

    base: str = "smollm2"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    cache_dir: Optional[str] = None


@dataclass(frozen=True)
class TrainingConfig:
    """Attributes: adapter training hyperparameters and the training-set recipe size."""

    steps: int = _f(20, ge=1)
    learning_rate: float = _f(2e-4, gt=0.0)
    batch_size: int = _f(4, ge=1)
    max_length: int = _f(256, ge=16)
    examples: int = _f(256, ge=8)
    data_seed: int = _f(0, ge=0)


@dataclass(frozen=True)
class GenerationConfig:
    """Attributes: batching, resident adapter LRU size, decoding mode, prompt budget."""

    batch_size: int = _f(8, ge=1)
    max_resident_adapters: int = _f(8, ge=1)
    greedy: bool = False
    max_prompt_tokens: int = _f(1024, ge=64)


@dataclass(frozen=True)
class SandboxConfig:
    """Attributes: limits of the process-isolated judge (see coral/judge/sandbox.py)."""

    time_floor_s: float = _f(1.0, gt=0.0)
    time_factor: float = _f(10.0, ge=1.0)
    candidate_timeout_s: float = _f(60.0, gt=0.0)
    memory_mb: int = _f(1024, ge=64)
    max_output_bytes: int = _f(65536, ge=1024)
    max_processes: int = _f(64, ge=1)


@dataclass(frozen=True)
class PoolConfig:
    """Attributes: number of actors of one pool and the resources each one takes."""

    size: int = _f(1, ge=1)
    num_cpus: float = _f(1.0, ge=0.0)
    num_gpus: float = _f(0.0, ge=0.0)


@dataclass(frozen=True)
class RayConfig:
    """Attributes: where Ray runs, pool shapes, work-in-flight cap and fault-tolerance options."""

    address: Optional[str] = None
    num_cpus: Optional[int] = None
    max_in_flight: int = _f(16, ge=1)
    max_restarts: int = _f(3, ge=-1)
    max_task_retries: int = _f(3, ge=-1)
    training_pool: PoolConfig = PoolConfig()
    generation_pool: PoolConfig = PoolConfig()
    judge_pool: PoolConfig = PoolConfig(size=2)


@dataclass(frozen=True)
class StorageConfig:
    """Attributes: adapter store location (null: <model cache>/adapters)."""

    adapters: Optional[str] = None


@dataclass(frozen=True)
class Config:
    """The whole run configuration; `source` is the file it came from."""

    run: RunConfig = RunConfig()
    dataset: DatasetConfig = DatasetConfig()
    search: SearchConfig = SearchConfig()
    knobs: KnobRanges = KnobRanges()
    model: ModelConfig = ModelConfig()
    training: TrainingConfig = TrainingConfig()
    generation: GenerationConfig = GenerationConfig()
    sandbox: SandboxConfig = SandboxConfig()
    ray: RayConfig = RayConfig()
    storage: StorageConfig = StorageConfig()
    source: str = field(default="<defaults>", compare=False)


# --------------------------------------------------------------------------- loading

def _type_name(tp: Any) -> str:
    """Human name of an annotation for error messages."""
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, path: str) -> Any:
    """Check `value` against annotation `tp`, returning the frozen form; raise ValueError."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(value, inner[0], path)
    if origin is Literal:
        if value not in args:
            raise _Bad(path, f"must be one of {', '.join(map(repr, args))}, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise _Bad(path, f"must be a list, got {type(value).__name__} {value!r}")
        elem = args[0]
        return tuple(_convert(v, elem, f"{path}[{i}]") for i, v in enumerate(value))
    if tp is Range:
        if isinstance(value, dict):
            value = [value.get("low"), value.get("high")]
        if not (isinstance(value, (list, tuple)) and len(value) == 2):
            raise _Bad(path, f"must be [low, high], got {value!r}")
        low, high = (_convert(v, float, path) for v in value)
        if low > high:
            raise _Bad(path, f"low must be <= high, got [{low}, {high}]")
        return Range(low, high)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise _Bad(path, f"must be a mapping, got {type(value).__name__} {value!r}")
        return _build(tp, value, path)
    if tp is bool:
        if not isinstance(value, bool):
            raise _Bad(path, f"must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise _Bad(path, f"must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _Bad(path, f"must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise _Bad(path, f"must be a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config annotation {tp!r} at {path}")


class _Bad(Exception):
    """Internal: a validation failure at a key path."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")


def _check_range(value: Any, meta: dict, path: str) -> None:
    """Apply ge/le/gt/lt/nonempty metadata to a converted value."""
    if meta.get("nonempty") and len(value) == 0:
        raise _Bad(path, "must not be empty")
    items = value if isinstance(value, tuple) else (value,)
    for item in items:
        if not isinstance(item, (int, float)) or isinstance(item, bool) or item is None:
            continue
        if meta.get("ge") is not None and item < meta["ge"]:
            raise _Bad(path, f"must be >= {meta['ge']:g}, got {item:g}")
        if meta.get("le") is not None and item > meta["le"]:
            raise _Bad(path, f"must be <= {meta['le']:g}, got {item:g}")
        if meta.get("gt") is not None and item <= meta["gt"]:
            raise _Bad(path, f"must be > {meta['gt']:g}, got {item:g}")
        if meta.get("lt") is not None and item >= meta["lt"]:
            raise _Bad(path, f"must be < {meta['lt']:g}, got {item:g}")


def _build(cls: type, raw: dict, prefix: str) -> Any:
    """Construct dataclass `cls` from mapping `raw`, strictly."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "source"}
    kwargs = {}
    for key, value in raw.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if key not in fields:
            raise _Bad(path, f"unknown key (allowed: {', '.join(fields)})")
        converted = _convert(value, hints[key], path)
        _check_range(converted, dict(fields[key].metadata), path)
        kwargs[key] = converted
    obj = cls(**kwargs)
    _cross_checks(obj, prefix)
    return obj


def _cross_checks(obj: Any, prefix: str) -> None:
    """Rules that relate several fields of one section."""
    p = (prefix + ".") if prefix else ""
    if isinstance(obj, CAConfig) and obj.steps_min > obj.steps_max:
        raise _Bad(f"{p}steps_min", f"must be <= steps_max ({obj.steps_max}), got {obj.steps_min}")
    if isinstance(obj, GateConfig) and obj.start > obj.end:
        raise _Bad(f"{p}start", f"must be <= end ({obj.end:g}), got {obj.start:g}")
    if isinstance(obj, KnobRanges):
        for name in ("top_p",):
            rng = getattr(obj, name)
            if not (0.0 < rng.low <= rng.high <= 1.0):
                raise _Bad(f"{p}{name}", f"must lie in (0, 1], got [{rng.low:g}, {rng.high:g}]")
        if obj.temperature.low <= 0:
            raise _Bad(f"{p}temperature", f"low must be > 0, got {obj.temperature.low:g}")
        if obj.top_k.low < 1 or obj.max_new_tokens.low < 1:
            raise _Bad(f"{p}top_k", "low must be >= 1")
        if obj.repetition_penalty.low <= 0:
            raise _Bad(f"{p}repetition_penalty", "low must be > 0")


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


def to_dict(cfg: Config) -> dict:
    """Plain-data form of a config (for snapshots and Ray payloads); loads back equal."""
    def plain(obj: Any) -> Any:
        if isinstance(obj, Range):
            return [obj.low, obj.high]
        if dataclasses.is_dataclass(obj):
            return {f.name: plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)
                    if f.name != "source"}
        if isinstance(obj, tuple):
            return [plain(v) for v in obj]
        return obj
    return plain(cfg)
