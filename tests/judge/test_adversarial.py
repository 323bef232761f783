"""Hostile candidates: each must end as a failed candidate within its limit, the host unharmed,
and honest candidates judged before and after them must get the same verdicts.

Three sets (sources in tests/judge/attacks.py): the classic attacks (loops, bombs, writes,
signals, forged frames); one or more fresh candidates per root cause of issue 11, most of which
first switch the in-process audit guard off (root cause 1: its state is Python state the
candidate can rebind), so that what stops them is the kernel boundary: namespaces, the
read-only filesystem view, seccomp; and, below, one or more per root cause of issue 21, each
watched from the host while it runs (docs/judge.md has the table).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
from hostcheck import (Listener, Watch, pid_namespaces, processes_in, python_dirs,
                       sandbox_processes, server_pids, snapshot, stopped, work_dir_used_kib)
from attacks import (BODY, LEAVE_STATE, RAW_THREADS, READ_STATE, SCAN, classic, root_causes,
                     round3_attacks)

from coral.config import SandboxConfig
from coral.judge.quixbugs import load_problems, select
from coral.judge.sandbox import _SERVER_SLACK_S as SERVER_SLACK_S
from coral.judge.sandbox import DECODE_FLOOR_S, Judge
from coral.messages import Candidate, CandidateStatus

CFG = SandboxConfig(isolation="strict", time_floor_s=1.0, time_factor=10.0,
                    candidate_timeout_s=3.0, memory_mb=256, max_output_bytes=4096)
SLACK_S = 2.0
HONEST = {"reference": None, "wrong": BODY + "    return -1\n",
          "half": BODY + "    return a if a < 20 else b\n",
          "slow_loop": BODY + "    while True:\n        pass\n"}


@pytest.fixture(scope="module")
def host(tmp_path_factory, quixbugs_dir):
    """A judge for gcd, sentinel files, a UNIX listener, and snapshots of the host to compare."""
    base = tmp_path_factory.mktemp("host")
    (base / "sentinel.txt").write_text("untouched")
    (base / "dir").mkdir()
    (base / "dir" / "keep.txt").write_text("keep")
    listener = Listener()
    before = snapshot(python_dirs())
    judge = Judge(select(load_problems(quixbugs_dir), ["gcd"]), CFG,
                  dataset_dir=str(quixbugs_dir))
    judge.calibrate()
    yield {"judge": judge, "base": base, "data": quixbugs_dir, "listener": listener,
           "python": before}
    judge.close()
    listener.close()


def _hostile(h: dict) -> dict[str, str]:
    base = h["base"]
    return {**classic(str(base / "sentinel.txt"), str(base / "dir"),
                       str(h["data"] / "json_testcases" / "gcd.json")),
            **root_causes(base, h["data"], h["listener"].path)}


def _honest(judge: Judge) -> dict:
    """(status, per-test statuses) of each honest candidate."""
    out = {}
    for name, code in HONEST.items():
        v = judge.judge(Candidate(name, "gcd", code or judge.problem("gcd").reference_source))
        out[name] = (v.status, tuple(t.status for t in v.tests))
    return out


@pytest.fixture(scope="module")
def verdicts(host):
    judge = host["judge"]
    host["honest_before"] = _honest(judge)
    out = {}
    for name, code in _hostile(host).items():
        t0 = time.monotonic()
        out[name] = (judge.judge(Candidate(name, "gcd", code)), time.monotonic() - t0)
    host["honest_after"] = _honest(judge)
    return out


def test_every_root_cause_has_a_fresh_candidate():
    names = root_causes(Path("/b"), Path("/q"), "/s")
    assert {n.split("_")[0] for n in names} == {"rc1", "rc2", "rc3", "rc4", "rc5"}
    # issue 21: r4 (kill), r6 (shared state), r8 (printing) have tests of their own below
    assert {n.split("_")[0] for n in round3_attacks()} == {"r1", "r2", "r3", "r4", "r5", "r7"}


def _all_names() -> list[str]:
    fake = {"base": Path("/b"), "data": Path("/q"), "listener": type("L", (), {"path": "/s"})}
    return sorted(_hostile(fake))


@pytest.mark.parametrize("name", _all_names())
def test_hostile_candidate_fails_within_limit(verdicts, name):
    outcome, wall = verdicts[name]
    assert not (outcome.status is CandidateStatus.OK and outcome.passed == outcome.total), \
        (name, outcome)
    assert outcome.passed < outcome.total, (name, outcome)
    assert wall <= CFG.candidate_timeout_s + SLACK_S, (name, wall)


def _details(verdict) -> str:
    return verdict.detail + " ".join(t.detail for t in verdict.tests)


def test_the_kernel_boundary_is_what_stopped_them(verdicts):
    """With the guard switched off, the errors come from the kernel: no such file (not in the
    mount namespace), read-only filesystem, EPERM from seccomp."""
    seen = {n: _details(v) for n, (v, _) in verdicts.items()}
    assert "No such file" in seen["rc1_read_answers"]          # dataset not mounted
    assert "No such file" in seen["rc1_judge_memory"]          # no /proc
    assert "Read-only file system" in seen["rc2_sitecustomize"]
    for name in ("rc3_pidfd_stop", "rc3_mkfifo", "rc3_mknod_tmp", "rc4_new_session_fork",
                 "rc4_unix_socket"):
        assert "Operation not permitted" in seen[name], (name, seen[name])  # seccomp
    assert "got -1" in seen["rc3_ctypes_preloaded"]             # libc fork() refused
    assert "got -1" in seen["rc5_ipc_to_next_candidate"]        # no System V shared memory
    assert "result too large" in seen["rc5_oversized_frame"]  # 8 MiB per process, then cut
    assert "read outside the sandbox" in seen["read_test_data"]  # guard intact: guard stops it
    assert verdicts["infinite_loop"][0].tests[0].status.value == "TIMEOUT"
    assert verdicts["sys_exit_module"][0].status is CandidateStatus.CRASH


def test_forged_frames_cost_the_judge_little(verdicts):
    """80k colliding integers: compared in sorted canonical form, not hashed (was 36 s)."""
    outcome, wall = verdicts["rc5_hash_collisions"]
    assert outcome.tests[0].status.value in ("FAIL", "ERROR") and wall < 3.0


def test_honest_verdicts_unchanged(verdicts, host):
    assert host["honest_before"] == host["honest_after"]
    ref = host["honest_before"]["reference"]
    assert ref[0] is CandidateStatus.OK and set(ref[1]) == {ref[1][0]} and \
        ref[1][0].value == "PASS"


def test_host_unharmed(verdicts, host):
    base = host["base"]
    assert (base / "sentinel.txt").read_text() == "untouched"
    assert (base / "dir" / "keep.txt").read_text() == "keep"
    assert not (base / "fifo").exists() and not (Path.cwd() / "stolen").exists()
    assert (host["data"] / "json_testcases" / "gcd.json").exists()
    assert snapshot(python_dirs()) == host["python"]  # nothing written into Python
    assert host["listener"].connections() == 0  # the host's UNIX socket was never reached
    judge = host["judge"]
    namespaces = pid_namespaces(judge)
    assert namespaces  # the servers live in their own PID namespaces
    judge.close()  # nothing may outlive them, in any session
    deadline = time.monotonic() + 5.0
    while processes_in(namespaces) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_in(namespaces) == []


def test_a_candidate_cannot_see_earlier_candidates_in_its_memory(quixbugs_dir):
    """Candidate processes fork from a zygote that never read a request: an earlier
    candidate's source is nowhere in a later one's memory, while the later one's own source
    text is found by the same scan (so the scan reaches where request data lives)."""
    cfg = replace(CFG, time_floor_s=10.0, candidate_timeout_s=30.0)
    with Judge(select(load_problems(quixbugs_dir), ["gcd"]), cfg) as judge:
        _scan_after_earlier(judge)


def _scan_after_earlier(judge: Judge) -> None:
    earlier = BODY + "    note = 'ZZQXMARKER-A' * 40\n    while b:\n        a, b = b, a % b\n" \
                     "    return a\n"
    for _ in range(3):
        assert judge.judge(Candidate("earlier", "gcd", earlier)).passed == 6
    scan = judge.judge(Candidate("scanner", "gcd", SCAN))
    assert scan.tests[0].detail.startswith("got [0, "), scan.tests[0].detail
    assert scan.tests[0].detail != "got [0, 0]"


# --------------------------------------------------------------------------------------------
# Round 3 (issue 21): one fresh attack per root cause, each judged on a one-server judge and
# watched from the host (`hostcheck.Watch`): no stopped sandbox process, the peak of threads in
# the sandboxes and on the host, host Shmem, the work dir empty after it, and a correct
# candidate judged right after it on the same judge passes.
R3 = replace(CFG, time_floor_s=1.0, candidate_timeout_s=4.0, work_dir_mb=16)
# What the judge promises whatever the load: its read deadline on a server (budget + load
# limit + slack), plus the decode budget, plus this file's slack.
JUDGE_WAITS_AT_MOST_S = (R3.candidate_timeout_s + R3.time_floor_s + SERVER_SLACK_S
                         + DECODE_FLOOR_S + SLACK_S)


@pytest.fixture(scope="module")
def round3(quixbugs_dir):
    """Each round-3 attack with what the host saw, then a reference judged after it."""
    judge = Judge(select(load_problems(quixbugs_dir), ["gcd", "sqrt"]), R3,
                  dataset_dir=str(quixbugs_dir), workers=1)
    judge.calibrate()
    out = {}
    for name, (problem, code) in round3_attacks().items():
        t0, cpu0 = time.monotonic(), time.thread_time()
        with Watch(lambda: server_pids(judge)) as watch:
            verdict = judge.judge(Candidate(name, problem, code))
        wall, cpu = time.monotonic() - t0, time.thread_time() - cpu0
        servers = server_pids(judge)
        after = {p: judge.judge(Candidate("ref", p, judge.problem(p).reference_source))
                 for p in ("gcd", "sqrt")}
        out[name] = {"verdict": verdict, "wall": wall, "judge_cpu": cpu, "watch": watch,
                     "after": after, "left": sandbox_processes(judge),
                     "tmp_kib": work_dir_used_kib(judge),
                     "same_server": len(servers) == 1 and server_pids(judge) == servers}
    yield judge, out
    judge.close()


@pytest.mark.parametrize("name", sorted(round3_attacks()))
def test_round3_attack_is_contained(round3, name):
    """Fails within its limit; nothing stopped; threads bounded by the cgroup; the work dir
    empty again; host Shmem back; a correct candidate after it, on the same server, passes."""
    from coral.judge.cgroup import SERVER_TASKS
    from coral.judge.fitness import runtime_score
    judge, seen = round3[0], round3[1][name]
    verdict, watch = seen["verdict"], seen["watch"]
    if name.startswith("r7_"):  # correct, but its work at import is its time
        # (1.0 when import was free; a loaded machine can inflate the reference's timings)
        assert runtime_score(verdict, judge.problem(verdict.problem)) <= 0.5, verdict
    else:
        assert verdict.passed < verdict.total, verdict
    assert seen["wall"] <= JUDGE_WAITS_AT_MOST_S, seen
    assert not watch.stopped_seen and not stopped(seen["left"])
    assert watch.peak_sandbox <= SERVER_TASKS + R3.max_processes + 2, watch.peak_sandbox
    assert watch.peak_host - watch.host_before < 2000, (watch.host_before, watch.peak_host)
    assert watch.shmem_after - watch.shmem_before < 256 * 1024
    assert seen["tmp_kib"] < 1024, seen["tmp_kib"]
    assert seen["same_server"]  # the server it ran on was neither broken nor replaced
    for problem, ref in seen["after"].items():
        assert ref.status is CandidateStatus.OK and ref.passed == ref.total, (problem, ref)


def test_round3_each_root_cause_met_its_fix(round3):
    """What stopped each one is the fix of its root cause, not luck."""
    seen = {n: s for n, s in round3[1].items()}
    huge = seen["r1_huge_int_on_float_problem"]["verdict"]
    assert {t.status.value for t in huge.tests} == {"FAIL"}          # a verdict, not a crash
    nested = seen["r2_nested_frozensets"]
    assert nested["judge_cpu"] < 3.0, nested["judge_cpu"]             # was 57 s
    assert seen["r3_other_pids"]["verdict"].tests[0].detail == "got [1]"  # EPERM, every one
    owner = seen["r4_signal_owner"]["verdict"].tests[0].detail
    assert owner == "got ['1']", owner                                  # EPERM, every one
    threads = seen["r5_threads"]["verdict"].tests[0].detail
    assert threads.startswith("got ") and int(threads[4:]) <= R3.max_processes, threads
    first = seen["r7_import_time"]["verdict"].tests[0]
    assert first.status.value == "PASS" and first.seconds >= 0.4       # import is its time


def test_threads_are_refused_without_a_pids_cgroup(quixbugs_dir, monkeypatch):
    """The fallback where the host offers no writable pids controller: no threads at all."""
    from coral.judge import boundary, cgroup
    monkeypatch.setattr(cgroup, "pids_parent", lambda: None)
    one_task_each = cgroup.SERVER_TASKS + 1  # bwrap x2, supervisor, zygote, the candidate
    with Judge(select(load_problems(quixbugs_dir), ["gcd"]), R3, dataset_dir=str(quixbugs_dir),
               workers=1) as judge:
        assert not judge.isolation.cgroup_parent
        with Watch(lambda: server_pids(judge)) as watch:
            out = judge.judge(Candidate("threads", "gcd", RAW_THREADS))
        assert out.tests[0].detail == "got 0" and watch.peak_sandbox <= one_task_each
        ref = judge.judge(Candidate("ref", "gcd", judge.problem("gcd").reference_source))
        assert ref.passed == ref.total
    assert boundary.cgroup is cgroup


def test_a_kill_takes_the_whole_sandbox_stopped_processes_included(quixbugs_dir):
    """Root cause 4: every process of a server stopped from the host (what a SIGSTOP sent by
    the kernel on a candidate's behalf did to the supervisor); closing the judge still leaves
    nothing, in any state, and no cgroup."""
    import signal
    with Judge(select(load_problems(quixbugs_dir), ["gcd"]), R3, workers=1) as judge:
        ref = Candidate("ref", "gcd", judge.problem("gcd").reference_source)
        assert judge.judge(ref).passed == 6
        namespaces = pid_namespaces(judge)
        groups = [s.cgroup.path for s in judge._all_servers if s.cgroup]
        for pid in sandbox_processes(judge):
            os.kill(pid, signal.SIGSTOP)
        deadline = time.monotonic() + 10  # each stops once the scheduler runs it
        while len(stopped(sandbox_processes(judge))) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(stopped(sandbox_processes(judge))) >= 4
    assert processes_in(namespaces) == []  # gone when close() returns
    assert not any(os.path.exists(g) for g in groups)


def test_servers_outlive_the_threads_that_started_them(quixbugs_dir):
    """bwrap's --die-with-parent follows the thread that forked it: servers are started from
    the judge's own long-lived thread, so judge_many's worker threads can end."""
    with Judge(select(load_problems(quixbugs_dir), ["gcd"]), R3, workers=2) as judge:
        ref = Candidate("ref", "gcd", judge.problem("gcd").reference_source)
        assert all(v.passed == 6 for v in judge.judge_many([ref] * 4))  # its threads are gone
        pids = {s.proc.pid for s in judge._all_servers}
        time.sleep(0.3)
        assert all(s.alive for s in judge._all_servers)
        assert all(v.passed == 6 for v in judge.judge_many([ref] * 4))
        assert {s.proc.pid for s in judge._all_servers} == pids


def _coral_judge(tmp_path, files: dict[str, str],
                 *flags: str) -> tuple[subprocess.CompletedProcess, Watch]:
    """`coral judge FILE ... --problem gcd --workers 1` in a process of its own (stdout in strict
    UTF-8), watched from the host."""
    paths = []
    for name, code in files.items():
        (tmp_path / f"{name}.py").write_text(code, encoding="utf-8", errors="surrogatepass")
        paths.append(str(tmp_path / f"{name}.py"))
    env = {**os.environ, "PYTHONIOENCODING": "utf-8:strict"}
    argv = [sys.executable, "-m", "coral", "judge", *paths, "--problem", "gcd",
            "--workers", "1", "--set", "sandbox.time_floor_s=1.0", *flags]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=Path(__file__).resolve().parents[2])
    with Watch(lambda: {proc.pid}) as watch:
        out, err = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(argv, proc.returncode, out, err), watch


def test_candidates_share_nothing_on_one_server(tmp_path):
    """Root cause 6: judged in order on one server (`coral judge A B ... --workers 1`), a
    candidate that never computes gcd sees exactly what it saw on a fresh server after one
    that left answers in /tmp's xattrs, mode and times and reconfigured its result pipe; an
    honest one after them passes."""
    files = {"reader_first": READ_STATE, "writer": LEAVE_STATE, "reader_after": READ_STATE,
             "reference": BODY + "    while b:\n        a, b = b, a % b\n    return a\n"}
    done, watch = _coral_judge(tmp_path, files, "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    lines = {Path(v["file"]).stem: v for v in map(json.loads, done.stdout.splitlines())}
    assert lines["writer"]["passed"] == 6 and lines["reference"]["passed"] == 6
    first, after = lines["reader_first"], lines["reader_after"]
    assert first["passed"] == after["passed"] == 0
    assert [t[2] for t in after["tests"]] == [t[2] for t in first["tests"]], after["tests"]
    assert not watch.stopped_seen and watch.peak_host - watch.host_before < 2000
    assert watch.shmem_after - watch.shmem_before < 256 * 1024


def test_table_mode_prints_what_a_candidate_printed_safely(tmp_path):
    """Root cause 8: a lone surrogate in a candidate's output is escaped in the table."""
    printer = "print('caf\\udce9 \\ud800')\n" + BODY + "    return -1\n"
    done, watch = _coral_judge(tmp_path, {"printer": printer})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Traceback" not in done.stderr and "\\udce9" in done.stdout, done.stdout
    assert not watch.stopped_seen
