"""Objectives of judged candidates (real judge on gcd), pass@k and aggregation per genome."""

from __future__ import annotations

from math import comb

import pytest

from coral.judge import fitness
from coral.config import SandboxConfig
from coral.messages import Candidate, CandidateStatus, Scores, Verdict, CaseResult
from coral.messages import CaseStatus as TS
from coral.judge.quixbugs import load_problems, select
from coral.judge.sandbox import Judge


@pytest.fixture(scope="module")
def gcd_judge(quixbugs_dir):
    problems = select(load_problems(quixbugs_dir), ["gcd"])
    with Judge(problems, SandboxConfig(time_floor_s=0.5, candidate_timeout_s=5)) as judge:
        judge.calibrate()
        yield judge


def _score(judge, code):
    cand = Candidate("g", "gcd", code)
    return fitness.score(judge.judge(cand), cand, judge.problem("gcd"))


def test_reference_scores_high_and_buggy_scores_nothing(gcd_judge):
    p = gcd_judge.problem("gcd")
    assert 0 < p.buggy_passed < len(p.tests)   # measured once, with the calibration
    ref, bug = _score(gcd_judge, p.reference_source), _score(gcd_judge, p.buggy_source)
    assert ref.fixed == 1.0 and ref.bugfix == 1.0 and ref.syntax == 1.0
    assert 0.0 < ref.runtime <= 1.0 and abs(ref.runtime / 0.05 - round(ref.runtime / 0.05)) < 1e-9
    # The buggy program passes some tests, but handing it back is not a repair.
    assert bug == Scores()
    assert fitness.display_score(bug) < fitness.display_score(ref)


def test_syntax_partial_credit(gcd_judge):
    assert _score(gcd_judge, "def gcd(a, b:\n").syntax == 0.0
    wrong_params = _score(gcd_judge, "def gcd(x, y):\n    return 1\n")
    assert wrong_params.syntax == 0.5 and wrong_params.fixed == 0.0
    # no function of the problem's name: nothing to score at all
    assert _score(gcd_judge, "def other(a, b):\n    return 1\n") == Scores()


def test_bugfix_counts_only_improvement_over_the_buggy_program():
    assert fitness.improvement(passed=3, total=7, buggy_passed=3, fixed=False) == 0.0
    assert fitness.improvement(passed=1, total=7, buggy_passed=3, fixed=False) == 0.0  # clipped
    assert fitness.improvement(passed=5, total=7, buggy_passed=3, fixed=False) == 0.5
    assert fitness.improvement(passed=7, total=7, buggy_passed=3, fixed=True) == 1.0
    assert fitness.improvement(passed=4, total=4, buggy_passed=4, fixed=True) == 1.0
    assert fitness.improvement(passed=4, total=4, buggy_passed=4, fixed=False) == 0.0


@pytest.mark.parametrize("n, c, k", [(1, 0, 1), (1, 1, 1), (4, 1, 1), (4, 1, 2), (10, 3, 5),
                                     (10, 8, 5), (20, 1, 10), (5, 5, 5)])
def test_pass_at_k_is_chens_unbiased_estimator(n, c, k):
    assert fitness.pass_at_k(n, c, k) == pytest.approx(1 - comb(n - c, k) / comb(n, k))


def test_pass_at_k_rejects_impossible_counts():
    for n, c, k in [(3, 4, 1), (3, 1, 4), (3, 1, 0), (0, 0, 1)]:
        with pytest.raises(ValueError):
            fitness.pass_at_k(n, c, k)


def test_style_uses_real_linters():
    clean = "def gcd(a, b):\n    return a if b == 0 else gcd(b, a % b)\n"
    messy = "import os\ndef gcd(a,b):\n  x=1\n  return a if b==0 else gcd(b,a%b)\n"
    assert fitness.style_score(clean) == 1.0
    assert fitness.style_score(messy) < 0.5
    assert fitness.lint_findings(messy) >= 4


def test_security_is_ast_based_not_substring():
    harmless = "def f(a):\n    s = 'eval exec import os subprocess'\n    return s\n"
    assert fitness.security_score(harmless) == 1.0
    bad = "import os\nimport subprocess\ndef f(a):\n    return eval(a)\n"
    assert fitness.security_findings(bad) == ["import os", "import subprocess", "call eval"]
    assert fitness.security_score(bad) == pytest.approx(0.25)
    assert fitness.security_score("def f():\n    open('x', 'w')\n") == 0.75
    assert fitness.security_score("def f():\n    open('x')\n") == 1.0


def test_runtime_relative_and_zero_when_nothing_passes(gcd_judge):
    p = gcd_judge.problem("gcd")
    n = len(p.tests)
    slow = Verdict("g", "gcd", CandidateStatus.OK, tuple(
        CaseResult(i, TS.PASS, max(0.005, p.reference_seconds[i]) * 4) for i in range(n)))
    assert fitness.runtime_score(slow, p) == pytest.approx(0.25)
    none = Verdict("g", "gcd", CandidateStatus.OK, tuple(
        CaseResult(i, TS.FAIL, 0.001) for i in range(n)))
    assert fitness.runtime_score(none, p) == 0.0


def test_aggregate_reduces_samples_then_averages_problems():
    fixed = Scores(fixed=1.0, bugfix=1.0, syntax=1.0, runtime=0.5, style=1.0, security=1.0)
    half = Scores(bugfix=0.5, syntax=1.0, style=0.5, security=1.0)
    agg = fitness.aggregate([[fixed, half], [half, half]], k=1)
    assert agg.fixed == pytest.approx((0.5 + 0.0) / 2)          # pass@1 = 1/2, then 0
    assert agg.bugfix == pytest.approx((0.75 + 0.5) / 2)        # means, then mean
    assert fitness.aggregate([[fixed, half], [half, half]], k=2).fixed == pytest.approx(0.5)
    assert fitness.aggregate([]) == Scores()


def test_display_never_ranks_unfixed_above_fixed():
    worst_fixed = Scores(fixed=1.0)
    best_unfixed = Scores(fixed=0.0, bugfix=0.99, syntax=1.0, runtime=1.0, style=1.0,
                          security=1.0)
    assert fitness.display_score(worst_fixed) > fitness.display_score(best_unfixed)
    # per genome: one more problem fixed out of 40 beats perfect secondary objectives
    more = fitness.aggregate([[worst_fixed]] * 2 + [[Scores()]] * 38)
    fewer = fitness.aggregate([[Scores(**{k: 1.0 for k in Scores().to_dict()})]]
                              + [[best_unfixed]] * 39)
    assert fitness.display_score(more) > fitness.display_score(fewer)
