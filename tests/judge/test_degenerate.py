"""Degenerate answers score lowest, and a genome that copies the input never beats a fixer.

The original fitness rewarded the share of tests passed, which the buggy QuixBugs programs
already earn (0.45 on the local run's problems): a genome handing every program back
unchanged scored bugfix 0.45, syntax 1, style 0.95 and dominated a genome that fully fixed
gcd, hanoi and flatten. Here both are judged by the real sandbox and selected by the real
strategies.
"""

from __future__ import annotations

import pytest

from coral.config import SandboxConfig, SearchConfig
from coral.judge import fitness
from coral.judge.quixbugs import load_problems, select
from coral.judge.sandbox import Judge
from coral.messages import Candidate, CandidateStatus, Scores
from coral.search.strategies import make_strategy

PROBLEMS = ["gcd", "hanoi", "flatten", "bitcount", "sieve"]
PROSE = "The bug is in the loop condition; changing it fixes the function."


@pytest.fixture(scope="module")
def judge(quixbugs_dir):
    problems = select(load_problems(quixbugs_dir), PROBLEMS)
    with Judge(problems, SandboxConfig(time_floor_s=0.5, candidate_timeout_s=10)) as j:
        j.calibrate()
        yield j


def _scores(judge, genome: str, code_of) -> list[Scores]:
    """One sample per problem: the code `code_of(problem)` judged and scored."""
    out = []
    for name in PROBLEMS:
        p = judge.problem(name)
        cand = Candidate(genome, name, code_of(p))
        out.append(fitness.score(judge.judge(cand), cand, p))
    return out


def test_empty_prose_and_unchanged_answers_score_zero_everywhere(judge):
    for p in judge.problems:
        unchanged = judge.judge(Candidate("g", p.name, p.buggy_source))
        assert unchanged.status is CandidateStatus.UNCHANGED and unchanged.passed == 0
        for code in ("", PROSE, p.buggy_source, "# copied\n" + p.buggy_source):
            cand = Candidate("g", p.name, code)
            assert fitness.score(judge.judge(cand), cand, p) == Scores(), (p.name, code[:30])


def test_the_fixer_wins_selection_over_the_copier(judge):
    fixes = {"gcd", "hanoi", "flatten"}
    copier = _scores(judge, "copier", lambda p: p.buggy_source)
    fixer = _scores(judge, "fixer", lambda p: p.reference_source if p.name in fixes else PROSE)
    hostile = _scores(judge, "hostile", lambda p: (
        f"import os\n\n{p.reference_source}\n\nos.system('true')\n"))
    # The copier's programs pass tests, but it gets no credit for them.
    assert sum(judge.problem(n).buggy_passed for n in PROBLEMS) > 0
    genomes = {"copier": fitness.aggregate([[s] for s in copier]),
               "fixer": fitness.aggregate([[s] for s in fixer]),
               "hostile": fitness.aggregate([[s] for s in hostile])}
    assert genomes["copier"] == Scores()
    assert genomes["fixer"].fixed == pytest.approx(3 / 5)
    assert genomes["hostile"].fixed == 0.0 and genomes["hostile"].security < 1.0
    for strategy in ("nsga2", "random"):
        strat = make_strategy(SearchConfig(strategy=strategy, population_size=2), seed=0)
        asked = strat.ask()
        names = dict(zip((g.id for g in asked), ("copier", "hostile")))
        # Tell the copier and the hostile genome first, then the fixer in a later generation.
        strat.tell({gid: genomes[name] for gid, name in names.items()})
        nxt = strat.ask()
        strat.tell({nxt[0].id: genomes["fixer"], nxt[1].id: genomes["copier"]})
        assert strat.population[0][0].id == nxt[0].id, strategy
        assert fitness.display_score(genomes["fixer"]) > max(
            fitness.display_score(genomes[n]) for n in ("copier", "hostile"))
