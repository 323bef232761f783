"""Small frozen values passed between the boxes of the system (and across Ray)."""

from __future__ import annotations

from dataclasses import dataclass, field, make_dataclass
from enum import Enum
from typing import Optional, Sequence

from coral.objectives import NAMES


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
    UNCHANGED = "UNCHANGED"                # the buggy function itself (AST-equal): not run


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


def _scores_vector(self, names: Sequence[str] = NAMES) -> tuple[float, ...]:
    """The values of `names` (default: every objective, table order)."""
    return tuple(getattr(self, k) for k in names)


def _scores_to_dict(self) -> dict[str, float]:
    """Plain form: objective name -> value."""
    return {k: getattr(self, k) for k in NAMES}


def _scores_from_dict(cls, doc: dict) -> "Scores":
    """Inverse of `to_dict`; a missing or unknown objective is an error."""
    if set(doc) != set(NAMES):
        raise ValueError(f"scores need exactly the objectives {list(NAMES)}, got {sorted(doc)}")
    return cls(**{k: float(doc[k]) for k in NAMES})


# One float field per row of coral.objectives.TABLE (in its order), all defaulting to 0: the
# field list is built from the table so it is never kept in step by hand.
Scores = make_dataclass(
    "Scores", [(name, float, field(default=0.0)) for name in NAMES], frozen=True,
    namespace={"__doc__": "Objective values in [0, 1] (higher is better) of one candidate or "
                          "genome; fields = coral.objectives.NAMES.",
               "vector": _scores_vector, "to_dict": _scores_to_dict,
               "from_dict": classmethod(_scores_from_dict)})
Scores.__module__ = __name__  # pickled by name across Ray: coral.messages.Scores


@dataclass(frozen=True)
class CheapKnobs:
    """Per-request sampling settings, named as in transformers' GenerationConfig (here, not in
    coral.search.knobs which maps genomes to them, so messages depend on nothing above).

    The token budget is relative to the problem (coral.model.sampling.token_budget):
    ``max_new_tokens + max_new_tokens_factor x tokens of the buggy function``; with factor 0
    `max_new_tokens` is an absolute limit. top_k 1 decodes greedily (the same text for every
    seed).
    """

    temperature: float
    top_p: float
    top_k: int
    repetition_penalty: float
    max_new_tokens: int
    max_new_tokens_factor: float = 0.0

    @property
    def greedy(self) -> bool:
        """Whether these knobs decode greedily (deterministic: the seed does not matter)."""
        return int(self.top_k) == 1


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
