"""Config of the search box: strategy, population, genes, the cellular automaton, knob ranges."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from coral.config.fields import ConfigValueError, Range, setting


@dataclass(frozen=True)
class GeneChoices:
    """The values each heavy gene may take (peft's LoraConfig field names)."""

    r: tuple[int, ...] = setting((4, 8, 16), nonempty=True,
                                 doc="LoRA rank choices (peft `r`)")
    lora_alpha: tuple[float, ...] = setting((8.0, 16.0, 32.0), nonempty=True,
                                            doc="LoRA scaling choices (peft `lora_alpha`)")
    lora_dropout: tuple[float, ...] = setting((0.0, 0.05, 0.1), nonempty=True,
                                              doc="dropout choices on the LoRA path")
    target_modules: tuple[tuple[str, ...], ...] = setting(
        (("q_proj", "v_proj"), ("q_proj", "k_proj", "v_proj", "o_proj")), nonempty=True,
        doc="module-name sets an adapter may wrap (peft `target_modules`)")
    use_dora: tuple[bool, ...] = setting((False, True), nonempty=True,
                                         doc="whether an adapter may be DoRA (peft `use_dora`)")


@dataclass(frozen=True)
class CAConfig:
    """The cellular-automaton seed whose features map to the cheap knobs."""

    width: int = setting(16, ge=4, le=256, doc="torus width in cells")
    height: int = setting(16, ge=4, le=256, doc="torus height in cells")
    density: float = setting(0.35, gt=0.0, lt=1.0, doc="share of live cells in a random seed")
    steps_min: int = setting(8, ge=1, doc="fewest automaton steps a genome may run")
    steps_max: int = setting(32, ge=1, doc="most automaton steps a genome may run")

    def check(self) -> None:
        """steps_min <= steps_max."""
        if self.steps_min > self.steps_max:
            raise ConfigValueError(
                "steps_min", f"must be <= steps_max ({self.steps_max}), got {self.steps_min}")


@dataclass(frozen=True)
class GateConfig:
    """An optional survival threshold on one objective, rising over generations."""

    enabled: bool = setting(False, doc="apply the gate")
    objective: Literal["bugfix", "style", "security", "runtime", "syntax"] = setting(
        "bugfix", doc="objective the threshold applies to")
    schedule: Literal["sigmoid", "linear", "sqrt"] = setting(
        "linear", doc="how the threshold rises from start to end over the generations")
    start: float = setting(0.0, ge=0.0, le=1.0, doc="threshold in the first generation")
    end: float = setting(0.5, ge=0.0, le=1.0, doc="threshold in the last generation")

    def check(self) -> None:
        """start <= end."""
        if self.start > self.end:
            raise ConfigValueError("start", f"must be <= end ({self.end:g}), got {self.start:g}")


@dataclass(frozen=True)
class BudgetConfig:
    """What a run may spend; it stops cleanly at the first generation boundary past any limit.

    0 means no limit. Two strategies given the same budget spend the same samples (plus or
    minus one generation's worth when the limit is not a multiple of it).
    """

    samples: int = setting(0, ge=0, doc="answers generated and judged for the search "
                                        "(genomes x train problems x samples each); 0: no limit")
    max_hours: float = setting(0.0, ge=0.0, doc="driver wall-clock hours, summed over resumes; "
                                                "0: no limit")
    gpu_hours: float = setting(0.0, ge=0.0, doc="wall hours x GPUs the pools reserve "
                                                "(ray.*_pool size x num_gpus); 0: no limit")


@dataclass(frozen=True)
class SearchConfig:
    """Strategy, size and variation rates of the evolutionary search."""

    strategy: Literal["nsga2", "random"] = setting(
        "nsga2", doc="search strategy: nsga2 (Pareto selection) or random (the baseline)")
    population_size: int = setting(8, ge=2, doc="genomes per generation")
    generations: int = setting(3, ge=1, doc="generations to run (resume can extend a run); "
                                            "with a budget, the most generations it may take")
    budget: BudgetConfig = setting(BudgetConfig(), doc="limits on what the run spends")
    crossover_rate: float = setting(0.9, ge=0.0, le=1.0,
                                    doc="probability that a child mixes two parents")
    mutation_rate: float = setting(0.2, ge=0.0, le=1.0,
                                   doc="per-gene probability of a mutation")
    genes: GeneChoices = setting(GeneChoices(), doc="values of the heavy genes")
    ca: CAConfig = setting(CAConfig(), doc="the cellular automaton behind the cheap knobs")
    gate: GateConfig = setting(GateConfig(), doc="optional rising threshold on one objective")


@dataclass(frozen=True)
class KnobRanges:
    """The range each sampling knob is mapped into (transformers' generation names)."""

    temperature: Range = setting(Range(0.2, 1.2), doc="softmax temperature range")
    top_p: Range = setting(Range(0.7, 1.0), doc="nucleus sampling mass range, within (0, 1]")
    top_k: Range = setting(Range(5, 100), doc="top-k cut-off range (tokens)")
    repetition_penalty: Range = setting(Range(1.0, 1.3),
                                        doc="repetition penalty range (1 = none)")
    max_new_tokens: Range = setting(Range(96, 256), doc="generated-token budget range")

    def check(self) -> None:
        """Ranges that transformers would reject."""
        if not (0.0 < self.top_p.low <= self.top_p.high <= 1.0):
            raise ConfigValueError(
                "top_p", f"must lie in (0, 1], got [{self.top_p.low:g}, {self.top_p.high:g}]")
        if self.temperature.low <= 0:
            raise ConfigValueError("temperature", f"low must be > 0, got {self.temperature.low:g}")
        for name in ("top_k", "max_new_tokens"):
            if getattr(self, name).low < 1:
                raise ConfigValueError(name, "low must be >= 1")
        if self.repetition_penalty.low <= 0:
            raise ConfigValueError("repetition_penalty", "low must be > 0")
