"""Config of the model box: the base model, adapter training, generation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

from coral.config.fields import setting


@dataclass(frozen=True)
class ModelConfig:
    """The base model every adapter is trained on and generates with."""

    base: str = setting(
        "smollm2", doc="smollm2 (embedded) | tiny (random, tests) | hub id | folder | .gguf file")
    device: Literal["auto", "cpu", "cuda"] = setting(
        "auto", doc="where the model runs (auto: cuda when available)")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = setting(
        "auto", doc="weight dtype (auto: bfloat16 on cuda, float32 on cpu)")
    cache_dir: Optional[str] = setting(
        None, doc="converted models and adapters (null: $CORAL_CACHE or ~/.cache/coral)")


@dataclass(frozen=True)
class TrainingConfig:
    """Adapter training hyperparameters and the size of the training set."""

    steps: int = setting(20, ge=1, doc="optimizer steps per adapter")
    learning_rate: float = setting(2e-4, gt=0.0, doc="AdamW learning rate")
    batch_size: int = setting(4, ge=1, doc="examples per step")
    max_length: int = setting(256, ge=16, doc="tokens per example (prompt + fix), truncated")
    examples: int = setting(256, ge=8, doc="bug-repair examples generated for training")
    data_seed: int = setting(0, ge=0, doc="seed of the training set (part of its version)")


@dataclass(frozen=True)
class GenerationConfig:
    """Batching, adapter residency, decoding mode and prompt budget of generation."""

    batch_size: int = setting(8, ge=1, doc="requests decoded together (adapters may mix)")
    max_resident_adapters: int = setting(
        8, ge=1, doc="adapters kept loaded per generator (least recently used evicted)")
    greedy: bool = setting(False, doc="greedy decoding, ignoring the sampling knobs")
    max_prompt_tokens: int = setting(1024, ge=64, doc="prompt tokens kept (left-truncated)")
