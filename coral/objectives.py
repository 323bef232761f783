"""The ONE table of objectives: every score a candidate or genome gets, and what it means.

Everything that names objectives is built from `TABLE`: `coral.messages.Scores` (one float
field per row, in this order), config validation of `search.objectives` / `search.gates`,
`coral.judge.fitness` (one measure per row, registered by name; a missing measure fails at
import) and the report's columns. Adding an objective = one row here + one `@measure` in
fitness.

Every value lies in [0, 1], higher is better. A candidate whose function is the buggy one
unchanged (status UNCHANGED) or absent (MISSING_FUNCTION, empty or prose answers) scores 0 on
every objective, so no degenerate answer can collect style or security points.

How a genome's value is reduced from its samples: per problem over the n samples (`reduce`:
"mean", or "pass@k" = Chen et al.'s unbiased estimator from the number of fixed samples), then
the mean over problems.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Reduce = Literal["mean", "pass@k"]


@dataclass(frozen=True)
class Objective:
    """One objective: its name, what it means, its direction, how it is computed and reduced."""

    name: str
    meaning: str
    reads: str
    reduce: Reduce = "mean"
    direction: Literal["max"] = "max"  # every objective is maximised (kept for the report)


TABLE: tuple[Objective, ...] = (
    Objective("fixed", "problems repaired: pass@k per problem, mean over problems",
              "Verdict.fixed of each sample (every test passed)", reduce="pass@k"),
    Objective("bugfix", "improvement over the buggy program: (passed - buggy_passed) / "
              "(total - buggy_passed), clipped at 0", "Verdict.passed, Problem.buggy_passed"),
    Objective("syntax", "1 parses with the reference function and parameters, 0.5 parses "
              "with another signature, 0 does not parse", "extracted code, Problem.parameters"),
    Objective("runtime", "reference seconds / candidate seconds over passing tests, capped "
              "at 1, quantised to 0.05; 0 when nothing passes",
              "Verdict.tests seconds, Problem.reference_seconds"),
    Objective("style", "1 - pyflakes + pycodestyle findings per non-blank line",
              "extracted code"),
    Objective("security", "1 - 0.25 per risky construct found on the AST (eval, os, "
              "dunder escapes, ...)", "extracted code"),
)

NAMES: tuple[str, ...] = tuple(o.name for o in TABLE)
BY_NAME: dict[str, Objective] = {o.name: o for o in TABLE}
# The objective that counts problems fixed: ranks genomes for humans (display score, best).
PRIMARY = TABLE[0].name


def objective(name: str) -> Objective:
    """The table row of `name`; unknown names raise ValueError listing the known ones."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown objective {name!r} (known: {', '.join(NAMES)})") from None


def check_names(names: tuple[str, ...], what: str) -> None:
    """Raise ValueError unless every name is an objective and none repeats."""
    for name in names:
        objective(name)
    if len(set(names)) != len(names):
        raise ValueError(f"{what} repeats an objective: {list(names)}")
