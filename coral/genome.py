"""Genomes: heavy genes (adapter shape, peft's names) plus a cellular-automaton seed."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass


@dataclass(frozen=True)
class HeavyGenes:
    """What decides the adapter: changing any of these means training a new one."""

    r: int
    lora_alpha: float
    lora_dropout: float
    target_modules: tuple[str, ...]
    use_dora: bool

    def canonical(self) -> dict:
        """Canonical plain form: numbers normalised, module list sorted and de-duplicated."""
        return {
            "r": int(self.r),
            "lora_alpha": float(self.lora_alpha),
            "lora_dropout": round(float(self.lora_dropout), 6),
            "target_modules": sorted(set(self.target_modules)),
            "use_dora": bool(self.use_dora),
        }

    def key(self, base_model: str, data_version: str) -> str:
        """Content address of the adapter: sha256 of canonical JSON of genes + model + data."""
        doc = {"genes": self.canonical(), "base_model": base_model, "data_version": data_version}
        text = json.dumps(doc, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class CASeed:
    """Initial grid (row-major 0/1), outer-totalistic rule (birth/survival counts), steps."""

    width: int
    height: int
    cells: tuple[int, ...]
    birth: tuple[int, ...]
    survival: tuple[int, ...]
    steps: int


@dataclass(frozen=True)
class Genome:
    """One individual: a deterministic id, heavy genes and a CA seed."""

    id: str
    heavy: HeavyGenes
    ca: CASeed
