"""The 40 QuixBugs programs as `Problem` values: sources, signature, test cases, comparison.

Data come from an upstream checkout (https://github.com/jkoppel/QuixBugs), located by
`resolve_path` (`QUIXBUGS_SEARCH_ORDER`); nothing is copied into the project.
31 programs have JSON input/output cases (json_testcases/); the 9 graph programs have pytest
files whose cases are transcribed in `coral.judge.graphs`. Cases that the upstream suite
itself skips as too slow are left out (see `SLOW_CASES`). Results are compared the way the
upstream asserts do, made a little more tolerant: generators are consumed into lists
(by the child), tuples and lists compare equal deeply, floats compare with a tolerance.
"""

from __future__ import annotations

import ast
import hashlib
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from coral.config.judge import QUIXBUGS_SEARCH_ORDER
from coral.judge import codec
from coral.messages import Candidate
from coral.judge.graphs import GRAPH_CASES, graph_spec

UPSTREAM = "https://github.com/jkoppel/QuixBugs"
# What `ast.parse` raises on hostile or malformed source (never executed to find out).
PARSE_ERRORS = (SyntaxError, ValueError, RecursionError, MemoryError)

# Inputs the upstream pytest files skip (knapsack: "Takes about 4 mins to pass!" unless
# --runslow; levenshtein: "Takes too long to pass!" always).
SLOW_CASES = {
    "knapsack": lambda args: args and args[0] == 6404180,
    "levenshtein": lambda args: args == ["amanaplanacanalpanama",
                                         "docnoteidissentafastneverpreventsafatnessidietoncod"],
}


class DatasetError(FileNotFoundError):
    """The QuixBugs checkout is missing or incomplete."""


class DatasetNotFound(DatasetError):
    """No place in the search order holds a checkout (`coral data pull` can prepare one)."""


@dataclass(frozen=True)
class Case:
    """One test: encoded inputs (wire format), optional graph spec, projection, expected."""

    __test__ = False
    index: int
    inputs: str                    # codec JSON of the argument list
    expected: Any
    graph: str = ""                # JSON graph spec for Node-based programs, else ""
    projection: str = "value"      # how the child reads the result (see coral.judge.child)
    abs_tol: Optional[float] = None


@dataclass(frozen=True)
class Problem:
    """One QuixBugs program with its reference fix, signature and test cases."""

    name: str
    function: str
    parameters: tuple[str, ...]
    buggy_source: str
    reference_source: str
    tests: tuple[Case, ...]
    reference_seconds: tuple[float, ...] = ()  # per test, filled by `Judge.calibrate`
    buggy_passed: Optional[int] = None         # tests the buggy program passes, ditto


_PARTS = ("python_programs", "correct_python_programs", "json_testcases", "python_testcases")


def prepared_path() -> Path:
    """Where `coral data pull` puts QuixBugs: <$CORAL_CACHE or ~/.cache/coral>/quixbugs."""
    root = os.environ.get("CORAL_CACHE") or Path.home() / ".cache" / "coral"
    return Path(root).expanduser() / "quixbugs"


def search_places(path: Optional[str | os.PathLike] = None) -> list[tuple[str, Optional[Path]]]:
    """(where, path) in `QUIXBUGS_SEARCH_ORDER`; None where nothing is set."""
    env = os.environ.get("CORAL_QUIXBUGS")
    places = [("dataset.quixbugs", Path(path).expanduser() if path else None),
              ("$CORAL_QUIXBUGS", Path(env).expanduser() if env else None),
              ("coral data pull", prepared_path())]
    checkout = Path(__file__).resolve().parents[2]   # the folder holding coral/
    for base in dict.fromkeys((checkout, Path.cwd().resolve())):
        places.append((f"beside {base}", base.parent / "shared" / "quixbugs"))
    return places


def _missing_part(root: Path) -> Optional[str]:
    """The first folder a QuixBugs checkout needs that `root` lacks, else None."""
    return next((sub for sub in _PARTS if not (root / sub).is_dir()), None)


def resolve_path(path: Optional[str | os.PathLike] = None) -> Path:
    """The checkout, looked for in `QUIXBUGS_SEARCH_ORDER`; raise `DatasetError` naming every
    place tried and how to prepare one. A location that is set (config, $CORAL_QUIXBUGS) must be a
    complete checkout: a wrong setting is an error, not a reason to look elsewhere."""
    tried = []
    for where, place in search_places(path):
        if place is None:
            tried.append(f"{where}: not set")
            continue
        root = place.resolve()
        missing = _missing_part(root)
        if missing is None:
            return root
        if where in ("dataset.quixbugs", "$CORAL_QUIXBUGS"):
            raise DatasetError(f"QuixBugs checkout {root} ({where}) lacks {missing}/: it must "
                               f"be a clone of {UPSTREAM}")
        tried.append(f"{where}: {root} " + ("missing" if not root.exists() else
                                            f"lacks {missing}/"))
    raise DatasetNotFound(
        "QuixBugs not found. Looked for " + QUIXBUGS_SEARCH_ORDER + ":\n  " +
        "\n  ".join(tried) +
        f"\nprepare it with `coral data pull` (clones {UPSTREAM}) or "
        "`coral data pull --from PATH` (copies a checkout you have)")


def signature(source: str, function: str) -> Optional[tuple[str, ...]]:
    """Positional parameter names of top-level `def function` in `source`, or None."""
    try:
        tree = ast.parse(source)
    except PARSE_ERRORS:
        return None
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == function:
            return tuple(a.arg for a in node.args.posonlyargs + node.args.args)
    return None


def _encode_inputs(args: Any) -> str:
    """Wire-encode an argument list (NodeRef placeholders become node tags)."""
    return json.dumps(codec.encode(list(args), lambda v: v.index if isinstance(v, codec.NodeRef)
                                   else None), separators=(",", ":"))


def _json_cases(root: Path, name: str) -> tuple[Case, ...]:
    """Cases of a JSON-tested program, minus the ones upstream skips as slow."""
    cases = []
    slow = SLOW_CASES.get(name, lambda args: False)
    for line in (root / "json_testcases" / f"{name}.json").read_text().splitlines():
        if not line.strip():
            continue
        args, expected = json.loads(line)
        if not isinstance(args, list):
            args = [args]
        if slow(args):
            continue
        tol = float(args[-1]) if name == "sqrt" else None  # pytest.approx(abs=epsilon)
        cases.append(Case(len(cases), _encode_inputs(args), expected, abs_tol=tol))
    return tuple(cases)


def _graph_cases(root: Path, name: str) -> tuple[Case, ...]:
    """Transcribed cases of a graph program, checked against the upstream test count."""
    text = (root / "python_testcases" / f"test_{name}.py").read_text()
    upstream = len(re.findall(r"^def test\w*\(", text, flags=re.M))
    cases = GRAPH_CASES[name]
    if upstream != len(cases):
        raise DatasetError(f"python_testcases/test_{name}.py has {upstream} tests, "
                           f"{len(cases)} transcribed in coral/judge/graphs.py")
    return tuple(Case(i, _encode_inputs(c.args), c.expected,
                          json.dumps(graph_spec(c)) if c.nodes else "", c.projection)
                 for i, c in enumerate(cases))


def load_problems(path: Optional[str | os.PathLike] = None) -> tuple[Problem, ...]:
    """All 40 programs (sorted by name) from a QuixBugs checkout."""
    root = resolve_path(path)
    problems = []
    for file in sorted((root / "python_programs").glob("*.py")):
        name = file.stem
        if name == "node" or name.endswith("_test"):
            continue
        reference = (root / "correct_python_programs" / file.name).read_text()
        params = signature(reference, name)
        if params is None:
            raise DatasetError(f"{file.name}: reference fix does not define {name}()")
        if (root / "json_testcases" / f"{name}.json").exists():
            tests = _json_cases(root, name)
        elif name in GRAPH_CASES:
            tests = _graph_cases(root, name)
        else:
            raise DatasetError(f"{name}: no json_testcases and no transcribed graph cases")
        problems.append(Problem(name, name, params, file.read_text(), reference, tests))
    return tuple(problems)


def select(problems: Sequence[Problem], names: Sequence[str]) -> tuple[Problem, ...]:
    """The named subset (all when `names` is empty); unknown names raise ValueError."""
    if not names:
        return tuple(problems)
    by_name = {p.name: p for p in problems}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise ValueError(f"unknown QuixBugs problem(s): {', '.join(unknown)} "
                         f"(known: {', '.join(sorted(by_name))})")
    return tuple(by_name[n] for n in dict.fromkeys(names))


def _rank(name: str, seed: int) -> str:
    """Stable pseudo-random key of a problem name (sha256, never the salted hash())."""
    return hashlib.sha256(f"{seed}:{name}".encode()).hexdigest()


def split(problems: Sequence[Problem], held_out_fraction: float,
          split_seed: int) -> tuple[tuple[Problem, ...], tuple[Problem, ...]]:
    """Deterministic (train, held_out) partition by hashed name; order of input is irrelevant."""
    ordered = sorted(problems, key=lambda p: _rank(p.name, split_seed))
    n_held = int(round(held_out_fraction * len(ordered)))
    if held_out_fraction > 0 and len(ordered) > 1:
        n_held = min(max(n_held, 1), len(ordered) - 1)
    held = {p.name for p in ordered[:n_held]}
    return (tuple(p for p in problems if p.name not in held),
            tuple(p for p in problems if p.name in held))


def outputs_match(actual: Any, expected: Any, abs_tol: Optional[float] = None) -> bool:
    """Deep equality as upstream asserts, with tuples == lists and floats within tolerance.

    Both sides are put in canonical form first (sets and dicts as sorted sequences, see
    coral.judge.codec), so a candidate's result is compared without hashing any of it. Any
    exception while comparing (OverflowError from a huge int against a float, ...) means the
    answer does not match: candidate data never raises into the judge.
    """
    try:
        return _match(codec.canonical(actual), codec.canonical(expected), abs_tol, 0)
    except Exception:  # noqa: BLE001 - whatever a candidate's value makes the comparison raise
        return False


def _match(actual: Any, expected: Any, abs_tol: Optional[float], depth: int) -> bool:
    """`outputs_match` on canonical forms."""
    if depth > codec.MAX_DEPTH + 2:
        return False
    if isinstance(expected, float) or (isinstance(actual, float) and isinstance(expected, int)
                                       and not isinstance(expected, bool)):
        if isinstance(actual, bool) or not isinstance(actual, (int, float)):
            return False
        if math.isinf(expected) or math.isinf(actual):
            return actual == expected
        tol = max(1e-6 * abs(expected), abs_tol if abs_tol is not None else 1e-12)
        return abs(actual - expected) <= tol
    if isinstance(expected, codec.Bag):  # set equality: exact, as Python's
        return isinstance(actual, codec.Bag) and actual.keys == expected.keys
    if isinstance(expected, codec.Pairs):  # same keys exactly, values as upstream ==
        return (isinstance(actual, codec.Pairs) and actual.keys == expected.keys
                and all(_match(av, ev, abs_tol, depth + 1)
                        for (_, av), (_, ev) in zip(actual, expected)))
    if isinstance(actual, (codec.Bag, codec.Pairs)):
        return False
    if isinstance(expected, (list, tuple)):
        return (isinstance(actual, (list, tuple)) and len(actual) == len(expected)
                and all(_match(a, e, abs_tol, depth + 1) for a, e in zip(actual, expected)))
    if isinstance(actual, (list, tuple, float)):
        return False
    return actual == expected


def benchmark_candidates(problems: Sequence[Problem]) -> list[Candidate]:
    """Every reference fix (must pass), then every buggy program (must fail): the judge's
    self-check used by `coral judge --quixbugs` and scripts/bench_judge.py."""
    return ([Candidate("reference", p.name, p.reference_source) for p in problems]
            + [Candidate("buggy", p.name, p.buggy_source) for p in problems])
