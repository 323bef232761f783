"""Config of the model box: the base model, adapter training, generation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

from coral.config.fields import ConfigValueError, setting


@dataclass(frozen=True)
class ModelConfig:
    """The base model every adapter is trained on and generates with."""

    base: str = setting(
        "smollm2", doc="smollm2 (embedded) | tiny (random, tests) | random:<shape> (random "
        "weights of a named architecture, for benchmarks: random:codellama-7b, random:tiny) "
        "| hub id | folder | .gguf file")
    device: Literal["auto", "cpu", "cuda"] = setting(
        "auto", doc="where the model runs (auto: cuda when available)")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = setting(
        "auto", doc="weight dtype (auto: bfloat16 on cuda, float32 on cpu)")
    cache_dir: Optional[str] = setting(
        None, doc="converted models and adapters (null: $CORAL_CACHE or ~/.cache/coral)")

    def check(self) -> None:
        """A random:<shape> base names a known shape."""
        from coral.model.random_base import PREFIX, SHAPES

        if self.base.startswith(PREFIX) and self.base[len(PREFIX):] not in SHAPES:
            raise ConfigValueError("base", f"unknown random shape {self.base!r}; known: "
                                   + ", ".join(PREFIX + s for s in sorted(SHAPES)))


@dataclass(frozen=True)
class TrainingConfig:
    """Adapter training: batch, length and the training set (steps and learning rate are
    heavy genes: search.genes.steps, search.genes.learning_rate)."""

    batch_size: int = setting(4, ge=1, doc="examples per step")
    max_length: int = setting(256, ge=16, doc="tokens per example (prompt + fix), truncated")
    examples: int = setting(256, ge=8, doc="bug-repair examples generated for training")
    data_seed: int = setting(0, ge=0, doc="seed of the training set (part of its version)")
    gradient_checkpointing: Literal["auto", "on", "off"] = setting(
        "auto", doc="recompute each decoder layer's activations in the backward pass instead "
        "of keeping them (auto: on for cuda, off on cpu); without it a 7B model at batch 8 x "
        "768 keeps 24-91 GiB of activations (`coral config check --plan` estimates them)")

    def checkpointing(self, device: str) -> bool:
        """Whether training on `device` (cpu | cuda) recomputes activations."""
        if self.gradient_checkpointing == "auto":
            return device == "cuda"
        return self.gradient_checkpointing == "on"


@dataclass(frozen=True)
class GenerationConfig:
    """Batching, adapter residency, decoding mode and prompt budget of generation."""

    batch_size: int = setting(8, ge=1, doc="requests decoded together (adapters may mix)")
    coalesce: bool = setting(
        True, doc="requests of every genome whose adapter is ready share batches (queued in "
        "the generation actor, or the in-process pool); false: each genome's call is decoded "
        "alone, as its own batches (the same texts, for comparison)")
    max_resident_adapters: int = setting(
        8, ge=1, doc="adapters kept loaded per generator (least recently used evicted)")
    greedy: bool = setting(False, doc="greedy decoding, ignoring the sampling knobs")
    threads: int = setting(
        0, ge=0, doc="torch threads while decoding: 0 = per batch, the cores that were free "
        "over the last batch (idle ones plus those generation used; coral/model/threads.py), "
        "so decoding takes every core while no adapter trains; N = always N")
    dora_cache: bool = setting(
        True, doc="compute each DoRA layer's weight norm once per resident adapter instead of "
        "at every decoding step (coral/model/dora.py); false: peft's own DoRA forward")
    max_prompt_tokens: int = setting(1024, ge=64, doc="prompt tokens kept (left-truncated)")
    prompt_cache_mib: int = setting(
        512, ge=0, doc="keys and values of prompts kept per (adapter, program), so each is "
        "prefilled once, not once per answer (coral/model/prefix.py; least recently used out "
        "past this size, MiB); 0: prefill every batch")
    backend: str = setting(
        "hf", nonempty=True, doc="text-generation backend: hf (resident Hugging Face model with "
        "peft adapters) or a module:attribute path to a GenerationBackend factory "
        "(coral/model/backend.py)")
    group_by_adapter: bool = setting(
        False, doc="one adapter per batch (run with it active) instead of mixed-adapter "
        "batches; faster where peft's per-adapter split of mixed batches costs more than the "
        "larger batch saves (scripts/bench_gpu.py measures both)")

    def check(self) -> None:
        """backend is a plain name or a module:attribute path."""
        module, colon, attr = self.backend.partition(":")
        name_ok = all(part.isidentifier() for part in module.split("."))
        if not name_ok or (colon and not attr.isidentifier()):
            raise ConfigValueError("backend", f"expected a name such as hf or a "
                                   f"module:attribute path, got {self.backend!r}")
