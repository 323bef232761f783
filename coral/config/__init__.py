"""Run configuration: YAML loaded once, strictly, into nested frozen dataclasses.

Sections live next to the box they configure (search.py, judge.py, model.py, run.py); keys are
declared with `fields.setting`, which carries each key's range rules and its meaning
(`coral config show --doc` prints them). The loader (loader.py) is the only code that reads
YAML: an unknown key, a wrong type or an out-of-range value raises `ConfigError` with one line
naming the file and the key path, e.g. ``configs/x.yaml: search.population_size: must be >= 2,
got 0``. Command-line overrides (``--set search.generations=5``) are applied to the raw mapping
before validation, so they are checked by the same rules.
"""

from coral.config.fields import ConfigError, ConfigValueError, Range, setting
from coral.config.judge import DatasetConfig, SandboxConfig
from coral.config.loader import apply_overrides, describe, from_dict, load, to_dict
from coral.config.model import GenerationConfig, ModelConfig, TrainingConfig
from coral.config.run import Config, PoolConfig, RayConfig, RunConfig, StorageConfig
from coral.config.search import CAConfig, GateConfig, GeneChoices, KnobRanges, SearchConfig

__all__ = [
    "CAConfig", "Config", "ConfigError", "ConfigValueError", "DatasetConfig", "GateConfig",
    "GeneChoices", "GenerationConfig", "KnobRanges", "ModelConfig", "PoolConfig", "Range",
    "RayConfig", "RunConfig", "SandboxConfig", "SearchConfig", "StorageConfig", "TrainingConfig",
    "apply_overrides", "describe", "from_dict", "load", "setting", "to_dict",
]
