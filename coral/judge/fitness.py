"""Fitness: each objective of `coral.objectives.TABLE` measured on one judged sample, and
reduced per genome (n samples per problem: mean or pass@k, then the mean over problems).

The measures (one per table row, registered with `@measure(name)`):
- fixed: 1 when the candidate ran and passed every test (`Verdict.fixed`); per problem the
  pass@k of the n samples (`pass_at_k`, Chen et al. 2021).
- bugfix: improvement over the buggy program, (passed - buggy_passed) / (total - buggy_passed)
  clipped at 0, where buggy_passed is measured once per problem by `Judge.calibrate` (an
  uncalibrated problem counts from 0). Timed-out candidates keep the tests they passed.
- syntax: 1 if the code parses and defines the problem's function with the reference
  parameter names; 0.5 if it parses but the function is missing or its parameters differ;
  0 if it does not parse.
- style: ``max(0, 1 - findings / lines)`` where findings are pyflakes messages plus
  pycodestyle errors (both used as libraries; they parse, never execute) and lines are the
  non-blank source lines; 0 when it does not parse.
- security: ``max(0, 1 - 0.25 x findings)`` over AST findings: calls of eval/exec/compile/
  __import__/open-for-writing/getattr-on-dunder names, imports of process, network, file
  system and FFI modules, and dunder attribute escapes (__globals__, __subclasses__, ...);
  0 when it does not parse. Names are resolved on the AST, not by substring.
- runtime: reference seconds / candidate seconds summed over the passing tests (each time
  floored at 5 ms, below which fork/pipe noise dominates), capped at 1 and quantised down to
  0.05; 0 when nothing passes.
Degenerate answers score 0 on every objective (`score`): UNCHANGED (the buggy function handed
back), MISSING_FUNCTION and empty code (no function extracted: empty or prose answers).
"""

from __future__ import annotations

import ast
import io
import math
from typing import Callable, Optional, Sequence

import pycodestyle
from pyflakes import api as flakes_api
from pyflakes import reporter as flakes_reporter

from coral.judge.quixbugs import PARSE_ERRORS, Problem, signature
from coral.messages import Candidate, CandidateStatus, CaseStatus, Scores, Verdict
from coral.objectives import BY_NAME, NAMES, PRIMARY

RUNTIME_STEP = 0.05
RUNTIME_FLOOR_S = 0.005  # per-test times below this are fork/pipe noise, not the algorithm
SECURITY_PENALTY = 0.25
# display_score: fixed first; the other objectives only break ties (valid for < 1000 problems).
DISPLAY_TIE_WEIGHT = 1e-3

RISKY_CALLS = frozenset({"eval", "exec", "compile", "__import__", "globals", "locals", "vars",
                         "breakpoint", "input", "setattr", "delattr"})
RISKY_MODULES = frozenset({"os", "sys", "subprocess", "socket", "shutil", "ctypes", "pickle",
                           "marshal", "importlib", "multiprocessing", "signal", "pty", "threading",
                           "tempfile", "pathlib", "urllib", "http", "requests", "builtins", "io",
                           "inspect", "gc", "resource", "mmap", "code", "codeop", "asyncio"})
RISKY_ATTRS = frozenset({"__globals__", "__subclasses__", "__builtins__", "__code__", "__bases__",
                         "__mro__", "__class__", "__dict__", "__getattribute__", "__reduce__",
                         "__closure__", "__loader__", "__spec__", "f_globals", "f_locals",
                         "gi_frame", "tb_frame", "f_back"})


def syntax_score(code: str, problem: Problem) -> float:
    """1 parse + right function and parameters; 0.5 parse only; 0 no parse."""
    try:
        ast.parse(code)
    except PARSE_ERRORS:
        return 0.0
    return 1.0 if signature(code, problem.function) == problem.parameters else 0.5


def lint_findings(code: str) -> int:
    """Number of pyflakes messages plus pycodestyle errors/warnings in `code`."""
    out, err = io.StringIO(), io.StringIO()
    flakes = flakes_api.check(code, "candidate.py", flakes_reporter.Reporter(out, err))
    lines = code.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    style = pycodestyle.Checker(lines=lines, quiet=True, max_line_length=100)
    return int(flakes) + int(style.check_all())


def style_score(code: str) -> float:
    """1 minus linter findings per non-blank line, floored at 0; 0 if it does not parse."""
    try:
        ast.parse(code)
    except PARSE_ERRORS:
        return 0.0
    lines = max(1, sum(1 for line in code.splitlines() if line.strip()))
    return max(0.0, 1.0 - lint_findings(code) / lines)


def _opens_for_writing(call: ast.Call) -> bool:
    """`open(..., mode)` whose literal mode writes (non-literal modes count as writing)."""
    mode: Optional[ast.expr] = call.args[1] if len(call.args) > 1 else None
    for kw in call.keywords:
        if kw.arg == "mode":
            mode = kw.value
    if mode is None:
        return False
    if isinstance(mode, ast.Constant) and isinstance(mode.value, str):
        return any(c in mode.value for c in "wax+")
    return True


def security_findings(code: str) -> list[str]:
    """Risky constructs found on the AST (raises SyntaxError if it does not parse)."""
    findings = []
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            findings += [f"import {a.name}" for a in node.names
                         if a.name.split(".")[0] in RISKY_MODULES]
        elif isinstance(node, ast.ImportFrom):
            if (node.module or "").split(".")[0] in RISKY_MODULES:
                findings.append(f"from {node.module} import")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            name = node.func.id
            if name in RISKY_CALLS:
                findings.append(f"call {name}")
            elif name == "open" and _opens_for_writing(node):
                findings.append("open for writing")
            elif name == "getattr" and len(node.args) > 1 and not (
                    isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str)
                    and not node.args[1].value.startswith("__")):
                findings.append("getattr with a dynamic or dunder name")
        elif isinstance(node, ast.Attribute) and node.attr in RISKY_ATTRS:
            findings.append(f"attribute {node.attr}")
        elif isinstance(node, ast.Name) and node.id in ("__builtins__", "__loader__"):
            findings.append(f"name {node.id}")
    return findings


def security_score(code: str) -> float:
    """1 minus 0.25 per AST finding, floored at 0; 0 if it does not parse."""
    try:
        return max(0.0, 1.0 - SECURITY_PENALTY * len(security_findings(code)))
    except PARSE_ERRORS:
        return 0.0


def runtime_score(outcome: Verdict, problem: Problem) -> float:
    """Reference/candidate seconds over passing tests, capped at 1, quantised; 0 if none pass."""
    passing = [t for t in outcome.tests if t.status is CaseStatus.PASS]
    if not passing:
        return 0.0
    if not problem.reference_seconds:
        return 1.0  # uncalibrated problem: no basis for comparison, do not penalise
    ref = sum(max(RUNTIME_FLOOR_S, problem.reference_seconds[t.index]) for t in passing)
    spent = sum(max(RUNTIME_FLOOR_S, t.seconds) for t in passing)
    ratio = min(1.0, ref / spent)
    return math.floor(ratio / RUNTIME_STEP + 1e-9) * RUNTIME_STEP


# ------------------------------------------------------------------ measures (one per objective)
Measure = Callable[[Verdict, Candidate, Problem], float]
MEASURES: dict[str, Measure] = {}
# Statuses that mean "nothing to score": every objective is 0 for them.
DEGENERATE = frozenset({CandidateStatus.UNCHANGED, CandidateStatus.MISSING_FUNCTION})


def measure(name: str) -> Callable[[Measure], Measure]:
    """Register the per-sample measure of objective `name` (which must be in the table)."""
    if name not in BY_NAME:
        raise ValueError(f"no objective {name!r} in coral.objectives.TABLE")

    def register(fn: Measure) -> Measure:
        MEASURES[name] = fn
        return fn
    return register


def _passed(outcome: Verdict) -> int:
    """Tests passed, counting only candidates that ran (a timed-out one keeps its passes)."""
    ran = outcome.status in (CandidateStatus.OK, CandidateStatus.TIMEOUT)
    return outcome.passed if ran else 0


@measure("fixed")
def _measure_fixed(outcome: Verdict, candidate: Candidate, problem: Problem) -> float:
    return 1.0 if outcome.fixed else 0.0


@measure("bugfix")
def _measure_bugfix(outcome: Verdict, candidate: Candidate, problem: Problem) -> float:
    return improvement(_passed(outcome), len(problem.tests), problem.buggy_passed or 0,
                       outcome.fixed)


@measure("syntax")
def _measure_syntax(outcome: Verdict, candidate: Candidate, problem: Problem) -> float:
    return syntax_score(candidate.code, problem)


@measure("runtime")
def _measure_runtime(outcome: Verdict, candidate: Candidate, problem: Problem) -> float:
    return runtime_score(outcome, problem) if _passed(outcome) else 0.0


@measure("style")
def _measure_style(outcome: Verdict, candidate: Candidate, problem: Problem) -> float:
    return style_score(candidate.code)


@measure("security")
def _measure_security(outcome: Verdict, candidate: Candidate, problem: Problem) -> float:
    return security_score(candidate.code)


_UNMEASURED = set(NAMES) - set(MEASURES)
if _UNMEASURED:  # the table and the measures must not drift apart
    raise ImportError(f"objectives without a measure in coral.judge.fitness: {_UNMEASURED}")


def improvement(passed: int, total: int, buggy_passed: int, fixed: bool) -> float:
    """Share of the tests the buggy program fails that now pass (0 when none more pass)."""
    if total <= buggy_passed:  # nothing left to gain: only a full fix counts
        return 1.0 if fixed else 0.0
    return max(0.0, (passed - buggy_passed) / (total - buggy_passed))


def score(outcome: Verdict, candidate: Candidate, problem: Problem) -> Scores:
    """Every objective of one judged sample; 0 everywhere for a degenerate answer."""
    if outcome.status in DEGENERATE or not candidate.code.strip():
        return Scores()
    return Scores(**{name: MEASURES[name](outcome, candidate, problem) for name in NAMES})


# ------------------------------------------------------------------ reduction per genome
def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct (Chen et al. 2021, eq. 1).

    1 - C(n-c, k) / C(n, k): the chance that at least one of k samples drawn without
    replacement from the n is correct, computed as a stable product.
    """
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n, got n={n} c={c} k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def reduce_problem(samples: Sequence[Scores], k: int) -> Scores:
    """One problem's value of each objective from its n samples (mean, or pass@k)."""
    n = len(samples)
    if n == 0:
        return Scores()
    out = {}
    for name in NAMES:
        values = [getattr(s, name) for s in samples]
        if BY_NAME[name].reduce == "pass@k":
            out[name] = pass_at_k(n, sum(1 for v in values if v >= 1.0), min(k, n))
        else:
            out[name] = sum(values) / n
    return Scores(**out)


def aggregate(per_problem: Sequence[Sequence[Scores]], k: int = 1) -> Scores:
    """A genome's scores: each problem reduced over its samples, then the mean over problems."""
    if not per_problem:
        return Scores()
    reduced = [reduce_problem(samples, k) for samples in per_problem]
    return Scores(**{name: sum(getattr(r, name) for r in reduced) / len(reduced)
                     for name in NAMES})


def display_score(scores: Scores) -> float:
    """One number for humans: the primary objective (problems fixed) dominates; the mean of
    the others only breaks ties."""
    others = [getattr(scores, k) for k in NAMES if k != PRIMARY]
    return getattr(scores, PRIMARY) + DISPLAY_TIE_WEIGHT * (sum(others) / len(others))
