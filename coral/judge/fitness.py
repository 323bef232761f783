"""The five objectives of one judged candidate, their per-genome mean, and a display score.

Every objective lies in [0, 1], higher is better:
- bugfix: fraction of the problem's tests passed.
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
`fixed` is 1 when every test passed (for an aggregate: the fraction of problems fixed).
"""

from __future__ import annotations

import ast
import io
import math
from typing import Optional, Sequence

import pycodestyle
from pyflakes import api as flakes_api
from pyflakes import reporter as flakes_reporter

from coral.messages import Candidate, CandidateStatus, Scores, Verdict, CaseStatus
from coral.judge.quixbugs import PARSE_ERRORS, Problem, signature

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


def score(outcome: Verdict, candidate: Candidate, problem: Problem) -> Scores:
    """All objectives of one judged candidate."""
    total = len(problem.tests)
    passed = outcome.passed if outcome.status in (CandidateStatus.OK,
                                                  CandidateStatus.TIMEOUT) else 0
    fixed = outcome.status is CandidateStatus.OK and total > 0 and passed == total
    return Scores(bugfix=passed / total if total else 0.0,
                  style=style_score(candidate.code),
                  security=security_score(candidate.code),
                  runtime=runtime_score(outcome, problem) if passed else 0.0,
                  syntax=syntax_score(candidate.code, problem),
                  fixed=1.0 if fixed else 0.0)


def aggregate(scores: Sequence[Scores]) -> Scores:
    """Mean of each objective over problems; `fixed` becomes the fraction fixed."""
    if not scores:
        return Scores(0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    n = len(scores)
    return Scores(*(sum(getattr(s, k) for s in scores) / n
                    for k in Scores.OBJECTIVES + ("fixed",)))


def display_score(scores: Scores) -> float:
    """One number for humans: `fixed` dominates; the mean objective only breaks ties."""
    return scores.fixed + DISPLAY_TIE_WEIGHT * (sum(scores.vector()) / len(Scores.OBJECTIVES))
