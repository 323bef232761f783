"""The process-isolated judge on the real QuixBugs data: verdicts, statuses, isolation basics."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from coral.config import SandboxConfig
from coral.messages import Candidate, CandidateStatus
from coral.messages import CaseStatus as TS
from coral.judge.quixbugs import load_problems
from coral.judge.sandbox import Judge

FAST = SandboxConfig(time_floor_s=0.5, time_factor=10.0, candidate_timeout_s=15.0, memory_mb=512)


@pytest.fixture(scope="module")
def judge(quixbugs_dir):
    with Judge(load_problems(quixbugs_dir), FAST, dataset_dir=str(quixbugs_dir), workers=2) as j:
        yield j


def _judge(judge, code, problem="gcd"):
    return judge.judge(Candidate("t", problem, code))


def test_every_reference_passes_and_every_buggy_fails(judge):
    problems = judge.problems
    refs = judge.judge_many([Candidate("ref", p.name, p.reference_source) for p in problems])
    bugs = judge.judge_many([Candidate("bug", p.name, p.buggy_source) for p in problems])
    assert [o.problem for o in refs] == [p.name for p in problems]  # input order kept
    failing_refs = [(o.problem, o.status, o.passed, o.total) for o in refs
                    if o.status is not CandidateStatus.OK or o.passed != o.total]
    assert failing_refs == []
    # Handed back as is, a buggy program is UNCHANGED and not run; calibration ran it.
    assert all(o.status is CandidateStatus.UNCHANGED for o in bugs)
    assert all(p.buggy_passed < len(p.tests) for p in judge.problems)
    assert all(len(p.reference_seconds) == len(p.tests) for p in judge.problems)


def test_statuses_are_data(judge):
    assert _judge(judge, "def gcd(a, b:\n").status is CandidateStatus.SYNTAX_ERROR
    assert _judge(judge, "def other(a, b):\n    return 1\n").status is \
        CandidateStatus.MISSING_FUNCTION
    crash = _judge(judge, "raise ValueError('boom')\ndef gcd(a, b):\n    return 1\n")
    assert crash.status is CandidateStatus.CRASH and "boom" in crash.detail
    err = _judge(judge, "def gcd(a, b):\n    return object()\n")
    assert err.status is CandidateStatus.OK and {t.status for t in err.tests} == {TS.ERROR}
    assert "not a plain value" in err.tests[0].detail
    wrong = _judge(judge, "def gcd(a, b):\n    return -1\n")
    assert {t.status for t in wrong.tests} == {TS.FAIL} and "got -1" in wrong.tests[0].detail


def test_per_test_timeout_then_later_tests_still_run(judge):
    p = judge.problem("gcd")
    first = p.tests[0]
    from coral.judge import codec
    a, b = codec.loads(first.inputs)
    code = ("def gcd(a, b):\n"
            f"    if (a, b) == ({a}, {b}):\n        while True:\n            pass\n"
            "    while b:\n        a, b = b, a % b\n    return a\n")
    out = _judge(judge, code)
    assert out.tests[0].status is TS.TIMEOUT
    assert all(t.status is TS.PASS for t in out.tests[1:])
    assert out.status is CandidateStatus.OK and out.passed == out.total - 1


def test_candidate_budget_gives_timeout_status(quixbugs_dir):
    cfg = SandboxConfig(time_floor_s=0.4, candidate_timeout_s=1.0)
    with Judge(load_problems(quixbugs_dir), cfg) as j:
        j.calibrate(["gcd"])
        out = j.judge(Candidate("t", "gcd", "def gcd(a, b):\n    while True:\n        pass\n"))
    assert out.status is CandidateStatus.TIMEOUT
    assert all(t.status is TS.TIMEOUT for t in out.tests) and out.seconds < 2.0


def test_generators_and_graph_programs(judge):
    flat = "def flatten(arr):\n    for x in arr:\n        if isinstance(x, list):\n" \
           "            yield from flatten(x)\n        else:\n            yield x\n"
    assert _judge(judge, flat, "flatten").passed == len(judge.problem("flatten").tests)
    always = "def detect_cycle(node):\n    return True\n"
    out = _judge(judge, always, "detect_cycle")
    assert 0 < out.passed < out.total


def test_output_captured_and_capped(quixbugs_dir):
    cfg = SandboxConfig(time_floor_s=0.5, max_output_bytes=1024)
    with Judge(load_problems(quixbugs_dir), cfg) as j:
        out = j.judge(Candidate("t", "gcd", "print('x' * 100000)\ndef gcd(a, b):\n    return 0\n"))
    assert "[output truncated]" in out.detail and len(out.detail) < 2000


def test_no_expected_answers_in_the_child(judge):
    code = ("import gc\n"
            "def gcd(a, b):\n"
            "    hits = [o for o in gc.get_objects() if isinstance(o, dict) and\n"
            "            ('expected' in o or 'reference_seconds' in o)]\n"
            "    return -len(hits) - 1000\n")
    out = _judge(judge, code)
    assert out.tests[0].detail == "got -1000"


def test_server_killed_between_candidates_is_replaced(quixbugs_dir):
    with Judge(load_problems(quixbugs_dir), FAST) as j:
        ref = Candidate("r", "gcd", j.problem("gcd").reference_source)
        assert j.judge(ref).passed == 6
        pid = j._all_servers[0].proc.pid
        os.kill(pid, signal.SIGKILL)
        j._all_servers[0].proc.wait()
        again = j.judge(ref)
        assert again.status is CandidateStatus.OK and again.passed == 6
        assert j._all_servers[0].proc.pid != pid


def test_isolation_strict_says_what_is_missing(monkeypatch, tmp_path):
    """On a machine without bubblewrap (PATH without bwrap), strict refuses with the fix."""
    from coral.judge import boundary
    monkeypatch.setenv("PATH", str(tmp_path))
    boundary.missing.cache_clear()
    try:
        with pytest.raises(boundary.IsolationUnavailable, match="bubblewrap.*apt-get install"):
            boundary.choose("strict")
        monkeypatch.delenv(boundary.ENV_OVERRIDE, raising=False)
        assert boundary.choose("auto").kind == "guard"  # auto falls back, with a warning
    finally:
        boundary.missing.cache_clear()


def test_a_probe_killed_by_a_signal_is_not_a_missing_boundary(monkeypatch):
    """Ray kills a stopping worker's children first: a bwrap probe that dies of a signal is run
    again, and if it keeps dying that is an infrastructure error, never the verdict "this
    machine cannot create namespaces" (which strict turns into IsolationUnavailable)."""
    from coral.judge import boundary
    real_run = subprocess.run
    killed = {"left": 1}

    def run(argv, **kw):
        if killed["left"]:
            killed["left"] -= 1
            return subprocess.CompletedProcess(argv, -signal.SIGKILL, "", "")
        return real_run(argv, **kw)
    monkeypatch.setattr(boundary.subprocess, "run", run)
    boundary.missing.cache_clear()
    try:
        assert boundary.missing() == ()            # killed once, then the real probe passes
        killed["left"] = boundary.PROBE_TRIES
        boundary.missing.cache_clear()
        with pytest.raises(RuntimeError, match="killed by signal 9"):
            boundary.missing()
    finally:
        boundary.missing.cache_clear()


def test_isolation_auto_uses_the_kernel_here_and_guard_warns(caplog):
    from coral.judge import boundary
    assert boundary.choose("auto").kind == "kernel"  # this machine (and CI) has bubblewrap
    with caplog.at_level("WARNING"):
        assert boundary.choose("guard").kind == "guard"
    assert "NOT behind a kernel boundary" in caplog.text


def test_guard_mode_still_judges_and_removes_its_work_dir(quixbugs_dir):
    cfg = SandboxConfig(isolation="guard", time_floor_s=0.5, candidate_timeout_s=15.0)
    with Judge(load_problems(quixbugs_dir), cfg) as j:
        ref = j.judge(Candidate("r", "gcd", j.problem("gcd").reference_source))
        assert ref.passed == ref.total
        server = j._all_servers[0]
        root = server.root
        assert os.path.isdir(root)
        os.kill(server.proc.pid, signal.SIGKILL)  # a dead server takes its work dir with it
        assert j.judge(Candidate("r", "gcd", j.problem("gcd").reference_source)).passed == 6
        assert not os.path.exists(root)


def test_a_stopped_server_costs_a_deadline_not_a_hang(quixbugs_dir):
    """SIGSTOP the server (what a pidfd attack did): the judge's read times out, the server is
    killed and the candidate judged again on a fresh one."""
    from hostcheck import descendants

    from coral.judge import sandbox
    cfg = SandboxConfig(time_floor_s=0.3, candidate_timeout_s=1.0)
    with Judge(load_problems(quixbugs_dir), cfg) as j:
        ref = Candidate("r", "gcd", j.problem("gcd").reference_source)
        assert j.judge(ref).passed == 6
        stopped = j._all_servers[0]
        for pid in descendants({stopped.proc.pid}):  # bwrap, the server, its zygote
            os.kill(pid, signal.SIGSTOP)
        t0 = time.monotonic()
        again = j.judge(ref)
        wall = time.monotonic() - t0
    assert again.passed == 6 and not stopped.alive
    assert wall < cfg.candidate_timeout_s + cfg.time_floor_s + sandbox._SERVER_SLACK_S + 5


def test_server_responses_are_checked_against_the_schema():
    from coral.judge.server import valid_response
    test = {"status": "RAN", "seconds": 0.1, "out": "1", "detail": ""}
    good = {"id": "a", "status": "OK", "detail": "", "output": "", "tests": [test],
            "recycle": False, "seconds": 0.2}
    assert valid_response(good, "a", 1)
    assert not valid_response(good, "b", 1)  # another request's answer
    assert not valid_response(good, "a", 2)
    assert not valid_response({**good, "extra": 1}, "a", 1)
    assert not valid_response({**good, "status": ["OK"]}, "a", 1)  # unhashable kind
    assert not valid_response({**good, "tests": [{**test, "out": None}]}, "a", 1)
    assert not valid_response({**good, "seconds": float("nan")}, "a", 1)


JUDGE_THEN_HANG = """
import sys
from coral.config import SandboxConfig
from coral.judge.quixbugs import load_problems, select
from coral.judge.sandbox import Judge
from coral.messages import Candidate
judge = Judge(select(load_problems(sys.argv[1]), ["gcd"]),
              SandboxConfig(time_floor_s=60, candidate_timeout_s=120))
judge.calibrate()
server = judge._all_servers[0]
print(server.proc.pid, flush=True)
judge.judge(Candidate("loop", "gcd", "def gcd(a, b):\\n    while True:\\n        pass\\n"))
"""


def test_killed_judge_leaves_no_sandbox_process(quixbugs_dir):
    """SIGKILL the judge while a candidate loops (budget 120 s): the server sees its stdin
    close and exits, and its PID namespace takes the candidate along, within seconds."""
    import subprocess
    import sys

    from hostcheck import descendants, processes_in

    judge = subprocess.Popen([sys.executable, "-c", JUDGE_THEN_HANG, str(quixbugs_dir)],
                             stdout=subprocess.PIPE, text=True)
    try:
        bwrap = int(judge.stdout.readline())
        time.sleep(1.0)  # the looping candidate is running now
        own = os.readlink("/proc/self/ns/pid")
        namespaces = set()
        for pid in descendants({bwrap}):
            try:
                namespaces.add(os.readlink(f"/proc/{pid}/ns/pid"))
            except OSError:
                pass
        namespaces.discard(own)
        assert namespaces
    finally:
        judge.kill()
        judge.wait()
    deadline = time.monotonic() + 10
    while processes_in(namespaces) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_in(namespaces) == []
    _dead_judges_cgroups_are_swept(judge.pid)


def _dead_judges_cgroups_are_swept(pid: int) -> None:
    """The killed judge's pids cgroup (where the host has them) is removed by the next judge
    process's sweep (here: this one's)."""
    from coral.judge import cgroup
    parent = cgroup.pids_parent()
    if parent:
        cgroup.sweep(parent)
        assert not [n for n in os.listdir(parent) if n.startswith(f"coral-sandbox-{pid}-")]


def test_a_server_whose_scheduling_changed_is_replaced(quixbugs_dir):
    """Root cause 3 of issue 21, checked the other way round: were a candidate to renice the
    zygote (seccomp refuses it), the supervisor would see it after the request and the judge
    would replace that server instead of handing later candidates a niced zygote."""
    from hostcheck import _parents, descendants
    with Judge(load_problems(quixbugs_dir), FAST) as j:
        ref = Candidate("r", "gcd", j.problem("gcd").reference_source)
        assert j.judge(ref).passed == 6
        server = j._all_servers[0]
        parent = _parents()
        below = descendants({server.proc.pid})
        zygote = next(p for p in below if parent.get(parent.get(p)) in below
                      and parent.get(parent.get(parent.get(p))) == server.proc.pid)
        os.setpriority(os.PRIO_PROCESS, zygote, 7)
        assert j.judge(ref).passed == 6 and not server.alive  # judged, then retired
        assert j.judge(ref).passed == 6 and j._all_servers[0] is not server
