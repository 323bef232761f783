"""Cheap knobs: sampling settings derived from cellular-automaton features."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CheapKnobs:
    """Per-request sampling settings, named as in transformers' GenerationConfig."""

    temperature: float
    top_p: float
    top_k: int
    repetition_penalty: float
    max_new_tokens: int
