"""Small frozen values passed between the boxes of the system (and across Ray)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Optional

from coral.search.knobs import CheapKnobs


class CaseStatus(str, Enum):
    """Outcome of one test case of one candidate."""

    PASS = "PASS"
    FAIL = "FAIL"
    ERROR = "ERROR"
    TIMEOUT = "TIMEOUT"


class CandidateStatus(str, Enum):
    """Outcome of a whole candidate (a failing candidate is data, not an exception)."""

    OK = "OK"                              # it ran; per-test statuses say how well
    SYNTAX_ERROR = "SYNTAX_ERROR"          # did not parse
    MISSING_FUNCTION = "MISSING_FUNCTION"  # parsed, but the function is absent or misnamed
    CRASH = "CRASH"                        # import/definition crashed or the worker died
    TIMEOUT = "TIMEOUT"                    # the whole candidate ran past its wall limit


@dataclass(frozen=True)
class Candidate:
    """A proposed fix: source code of one QuixBugs function, from one genome."""

    genome_id: str
    problem: str
    code: str
    raw_text: str = ""


@dataclass(frozen=True)
class CaseResult:
    """One test case's status, its wall seconds and a short detail line."""

    __test__ = False  # not a pytest class
    index: int
    status: CaseStatus
    seconds: float = 0.0
    detail: str = ""


@dataclass(frozen=True)
class Verdict:
    """The sandbox's verdict on one candidate."""

    __test__ = False
    genome_id: str
    problem: str
    status: CandidateStatus
    tests: tuple[CaseResult, ...] = ()
    seconds: float = 0.0
    detail: str = ""

    @property
    def passed(self) -> int:
        """Number of test cases that passed."""
        return sum(1 for t in self.tests if t.status is CaseStatus.PASS)

    @property
    def total(self) -> int:
        """Number of test cases run."""
        return len(self.tests)

    @property
    def fixed(self) -> bool:
        """The candidate ran and passed every test case."""
        return self.status is CandidateStatus.OK and 0 < self.passed == self.total


@dataclass(frozen=True)
class Scores:
    """Objective values in [0, 1] (higher is better) for one genome or candidate."""

    bugfix: float
    style: float
    security: float
    runtime: float
    syntax: float
    fixed: float = 0.0  # fraction of problems fixed (all tests passed); 0/1 for one candidate

    OBJECTIVES = ("bugfix", "style", "security", "runtime", "syntax")

    def vector(self) -> tuple[float, ...]:
        """The objectives in canonical order, for Pareto selection."""
        return tuple(getattr(self, k) for k in self.OBJECTIVES)


@dataclass(frozen=True)
class AdapterRef:
    """Where a trained adapter lives in the store, and how to verify it."""

    key: str
    uri: str
    checksum: str
    status: str = "ready"      # ready | training | failed
    use_dora: bool = False


@dataclass(frozen=True)
class GenerationRequest:
    """One buggy function to repair with one adapter (None = base model) and one set of knobs.

    The generator turns `buggy_source` into the model's prompt with coral.model.prompts.build_prompt,
    since only it holds the tokenizer (and its chat template).
    """

    request_id: str
    genome_id: str
    problem: str
    buggy_source: str
    adapter: Optional[AdapterRef]
    knobs: CheapKnobs
    seed: int


@dataclass(frozen=True)
class GenerationResult:
    """The text generated for a request."""

    request_id: str
    genome_id: str
    problem: str
    text: str
    new_tokens: int = 0
    seconds: float = 0.0
    meta: dict = field(default_factory=dict, compare=False)
