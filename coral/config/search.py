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
    steps: tuple[int, ...] = setting(
        (0, 10, 20), nonempty=True,
        doc="AdamW steps an adapter may be trained for; 0 means no adapter: the base model as "
        "it is (no training, no adapter key), so the untuned model is inside the search space")
    learning_rate: tuple[float, ...] = setting((1e-4, 2e-4, 5e-4), nonempty=True,
                                               doc="AdamW learning rates an adapter may use")

    def check(self) -> None:
        """Steps >= 0, learning rates > 0."""
        if any(s < 0 for s in self.steps):
            raise ConfigValueError("steps", f"must be >= 0 (0: no adapter), got {list(self.steps)}")
        if any(lr <= 0 for lr in self.learning_rate):
            raise ConfigValueError("learning_rate",
                                   f"must be > 0, got {list(self.learning_rate)}")


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
    """A survival threshold on one objective, rising over the generations.

    A genome passes when its value is above the threshold (0: any nonzero value). Genomes
    failing a gate are dropped from selection, but the population never shrinks: when too few
    pass, the best of the others (by the gated objectives, in gate order) fill it.
    """

    objective: str = setting("fixed", doc="objective the threshold applies to "
                             "(a name of coral/objectives.py)")
    schedule: Literal["sigmoid", "linear", "sqrt"] = setting(
        "linear", doc="how the threshold rises from start to end over the generations")
    start: float = setting(0.0, ge=0.0, lt=1.0, doc="threshold in the first generation")
    end: float = setting(0.0, ge=0.0, lt=1.0, doc="threshold in the last generation")

    def check(self) -> None:
        """A known objective; start <= end."""
        from coral.objectives import objective

        try:
            objective(self.objective)
        except ValueError as exc:
            raise ConfigValueError("objective", str(exc)) from None
        if self.start > self.end:
            raise ConfigValueError("start", f"must be <= end ({self.end:g}), got {self.start:g}")


@dataclass(frozen=True)
class BudgetConfig:
    """What a run may spend; it stops cleanly at a generation boundary.

    0 means no limit. The sample limit is kept inside a generation too (the last generation
    spends exactly what is left, to within one sample per train problem), so two strategies or
    evaluations given the same budget spend the same samples; hours are checked at generation
    boundaries (a run may pass them by one generation).
    """

    samples: int = setting(0, ge=0, doc="answers generated and judged for the search "
                                        "(genomes x train problems x samples each); 0: no limit")
    max_hours: float = setting(0.0, ge=0.0, doc="driver wall-clock hours, summed over resumes; "
                                                "0: no limit")
    gpu_hours: float = setting(0.0, ge=0.0, doc="wall hours x GPUs the pools reserve "
                                                "(ray.*_pool size x num_gpus); 0: no limit")


@dataclass(frozen=True)
class SearchConfig:
    """Strategy, size, objectives, sampling and variation rates of the evolutionary search."""

    strategy: str = setting(
        "nsga2", doc="search strategy registered in coral/search/strategies: nsga2 (Pareto "
        "selection) or random (the baseline); a new strategy is one file + its registration")
    population_size: int = setting(8, ge=2, doc="genomes per generation")
    generations: int = setting(3, ge=1, doc="generations to run (resume can extend a run); "
                                            "with a budget, the most generations it may take")
    budget: BudgetConfig = setting(BudgetConfig(), doc="limits on what the run spends")
    crossover_rate: float = setting(0.9, ge=0.0, le=1.0,
                                    doc="probability that a child mixes two parents")
    mutation_rate: float = setting(0.2, ge=0.0, le=1.0,
                                   doc="per-gene probability of a mutation")
    objectives: tuple[str, ...] = setting(
        ("fixed", "bugfix", "syntax"), nonempty=True,
        doc="objectives NSGA-II maximises (names of coral/objectives.py); the others are "
        "reported only. style, security and runtime barely vary between genomes: as "
        "objectives they fill the first front with noise")
    gates: tuple[GateConfig, ...] = setting(
        (GateConfig(),), doc="survival thresholds, each {objective, schedule, start, end}; "
        "the default (fixed above 0) makes any genome that fixes a problem beat any that "
        "fixes none")
    samples_per_problem: int = setting(
        2, ge=1, doc="answers sampled per (genome, problem): n of pass@k. Sample i of a "
        "problem uses the same seed for every genome (common random numbers); cost grows "
        "linearly")
    pass_at_k: int = setting(1, ge=1, doc="k of pass@k (<= samples_per_problem): the "
                             "`fixed` objective is the chance that one of k answers fixes it")
    reevaluate_top: int = setting(
        3, ge=1, doc="survivors re-evaluated at the end on samples_per_problem fresh sample "
        "seeds never used for selection; the final pick is the best of them on all its samples "
        "(search + fresh: the most samples any genome got; best.json, held-out check)")
    pick_confidence: float = setting(
        0.95, ge=0.0, lt=1.0, doc="a final candidate replaces the untuned model at greedy "
        "decoding only when its per-problem advantage on the train problems (pooled samples, "
        "paired by problem) has a one-sided lower confidence bound above 0 at this level; "
        "else the untuned model is handed back. 0: the best pooled score wins (a tie goes to "
        "the untuned model)")
    evaluation: Literal["fixed", "racing"] = setting(
        "racing", doc="fixed: every genome gets samples_per_problem samples per problem; "
        "racing: successive halving, every genome first gets racing_first samples per problem, "
        "the best racing_keep share of them twice as many, and so on up to "
        "samples_per_problem; pass@k uses the n each genome got. Greedy genomes get one "
        "sample per problem in both (it is their exact score)")
    racing_first: int = setting(1, ge=1, doc="racing: samples per problem of the first round "
                                "(raised to pass_at_k when lower)")
    racing_keep: float = setting(0.5, gt=0.0, lt=1.0,
                                 doc="racing: share of the racing genomes that get the next "
                                 "round's samples (rounded up, at least one)")
    seed_population: bool = setting(
        True, doc="generation 0 starts with the untuned model (no adapter) at greedy decoding "
        "and at default knobs (the middle of every range); with elitism the search's best can "
        "only fall below the untuned model by noise. Needs 0 in genes.steps")
    genes: GeneChoices = setting(GeneChoices(), doc="values of the heavy genes")
    ca: CAConfig = setting(CAConfig(), doc="the cellular automaton behind the cheap knobs")

    def check(self) -> None:
        """Known objectives, k <= n, seeding possible. The strategy name is checked against
        the registry where a run starts (coral.search.strategies.check_strategy): the config
        does not import the search."""
        from coral.objectives import check_names

        try:
            check_names(self.objectives, "objectives")
        except ValueError as exc:
            raise ConfigValueError("objectives", str(exc)) from None
        if self.pass_at_k > self.samples_per_problem:
            raise ConfigValueError("pass_at_k", f"must be <= samples_per_problem "
                                   f"({self.samples_per_problem}), got {self.pass_at_k}")
        if self.seed_population and 0 not in self.genes.steps:
            raise ConfigValueError("seed_population", "the untuned model needs 0 (no adapter) "
                                   "in genes.steps; add it or set seed_population: false")


@dataclass(frozen=True)
class KnobRanges:
    """The cheap knobs: how they are encoded and the range each is mapped into
    (transformers' generation names)."""

    encoding: Literal["ca", "direct"] = setting(
        "ca", doc="ca: knobs read from the genome's cellular automaton (the design); direct: "
        "knobs are real-valued genes (the plain encoding, to measure the CA against)")
    temperature: Range = setting(Range(0.2, 1.2), doc="softmax temperature range")
    top_p: Range = setting(Range(0.7, 1.0), doc="nucleus sampling mass range, within (0, 1]")
    top_k: Range = setting(Range(5, 100), doc="top-k cut-off range (tokens)")
    repetition_penalty: Range = setting(
        Range(1.0, 1.3), doc="repetition penalty range (1 = none); it counts generated "
        "tokens only, never the prompt's")
    max_new_tokens_factor: Range = setting(
        Range(1.0, 2.0), doc="token budget relative to the problem: a row may generate "
        "factor x (tokens of the buggy function) + max_new_tokens; a low of 1 fits every "
        "QuixBugs reference fix with the default margin")
    max_new_tokens: int = setting(
        32, ge=1, doc="fixed part of the token budget (code fence, end token, small growth "
        "of the fix); answers stop early at their closing fence")
    greedy_fraction: float = setting(
        0.15, ge=0.0, lt=1.0, doc="the lowest share of the temperature knob's quantile "
        "(either encoding) decodes greedily instead: top_k 1, no repetition penalty, the same "
        "text for every seed; the untuned model's decoding is inside the search space. "
        "0: never greedy")

    def check(self) -> None:
        """Ranges that transformers would reject."""
        if not (0.0 < self.top_p.low <= self.top_p.high <= 1.0):
            raise ConfigValueError(
                "top_p", f"must lie in (0, 1], got [{self.top_p.low:g}, {self.top_p.high:g}]")
        if self.temperature.low <= 0:
            raise ConfigValueError("temperature", f"low must be > 0, got {self.temperature.low:g}")
        if self.top_k.low < 1:
            raise ConfigValueError("top_k", "low must be >= 1")
        if self.max_new_tokens_factor.low < 0:
            raise ConfigValueError("max_new_tokens_factor", "low must be >= 0")
        if self.repetition_penalty.low <= 0:
            raise ConfigValueError("repetition_penalty", "low must be > 0")
