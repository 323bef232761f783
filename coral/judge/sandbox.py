"""Process-isolated judging of untrusted candidate programs against QuixBugs tests.

DANGER: candidates are model-written code and are treated as hostile. `Judge.judge_untrusted`
(alias `judge`) never runs them in this process: it sends the source and the test *inputs* to
a fork server (``python -m coral.judge.child``, a clean interpreter started with Popen, so it
is safe to use from a Ray actor's threads), which forks one process per candidate. The
expected answers stay here; the child's results come back as tagged JSON (never pickle) and
are compared here, so a candidate can neither read nor replace the comparison.

What holds for each candidate process:
- own session/process group, killed as a whole (SIGTERM, then SIGKILL) on a per-test limit
  ``max(time_floor_s, time_factor x reference seconds)`` (EvalPlus-style) and on the
  candidate budget ``candidate_timeout_s``; PR_SET_PDEATHSIG kills it if the server dies;
- rlimits: CPU seconds, address space (``memory_mb``), file size, open files, processes
  (RLIMIT_NPROC is NOT enforced for root: there the audit guard, which refuses fork/exec/
  spawn, and the process-group kill are what stop fork bombs);
- a fresh temp working dir, removed afterwards; stdout/stderr captured up to
  ``max_output_bytes`` (Python level) and fd-level writes bounded by RLIMIT_FSIZE;
- no network: the fork server unshares into an empty network namespace when it may (root or
  CAP_SYS_ADMIN); otherwise only the audit guard's refusal of socket operations holds;
- the audit guard of coral.judge.guard (writes only in the temp dir, reads only of the
  Python installation, no signals to others, no ctypes/subprocess/socket).
What does NOT hold: this is not a container. The candidate runs as the same user (root, here),
sees the real filesystem tree (reads are refused by the in-process guard, not the kernel) and
a CPython memory-safety bug would defeat the guard. Run the judge in a container or VM when
stronger isolation is needed.
"""

from __future__ import annotations

import ast
import json
import logging
import os
import queue
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Iterable, Optional, Sequence

from coral.judge import codec
from coral.config import SandboxConfig
from coral.messages import Candidate, CandidateStatus, Verdict, CaseResult, CaseStatus
from coral.judge.quixbugs import Problem, outputs_match
from coral.judge.unchanged import is_unchanged

log = logging.getLogger(__name__)

MAX_SOURCE_CHARS = 100_000
_PROJECT_ROOT = str(Path(__file__).resolve().parents[1])


_SERVER_START_ATTEMPTS = 3


class SandboxError(RuntimeError):
    """The sandbox itself (not a candidate) failed: an infrastructure error."""


class ForkServer:
    """One `python -m coral.judge.child` process and its request/response pipes."""

    def __init__(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_PROJECT_ROOT, env.get("PYTHONPATH"))
                                            if p)
        self.proc = subprocess.Popen(
            [sys.executable, "-u", "-m", "coral.judge.child"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, env=env, cwd=_PROJECT_ROOT, text=True, bufsize=1)
        hello = self.proc.stdout.readline()
        if not hello:
            raise SandboxError(f"fork server failed to start (exit {self.proc.wait()})")
        self.info = json.loads(hello)

    def request(self, req: dict) -> Optional[dict]:
        """Send one request; the response, or None if the server died meanwhile."""
        try:
            self.proc.stdin.write(json.dumps(req) + "\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        except (BrokenPipeError, OSError):
            return None
        return json.loads(line) if line else None

    def close(self) -> None:
        """Stop the server (closing stdin ends its loop) and reap it."""
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()


class Judge:
    """Holds the problems, reference timings and fork servers; judges candidates in isolation."""

    def __init__(self, problems: Sequence[Problem], sandbox: SandboxConfig = SandboxConfig(),
                 dataset_dir: Optional[str] = None, workers: int = 1) -> None:
        self.sandbox = sandbox
        self.workers = max(1, int(workers))
        self._problems = {p.name: p for p in problems}
        self._deny_read = [str(dataset_dir)] if dataset_dir else []
        self._servers: "queue.SimpleQueue[ForkServer]" = queue.SimpleQueue()
        self._all_servers: list[ForkServer] = []
        self._lock = threading.Lock()
        self._calibrating: dict[str, threading.Lock] = {}

    # ------------------------------------------------------------------ servers
    def _acquire(self) -> ForkServer:
        """A free fork server, started lazily (so it starts inside the actor process)."""
        while True:
            try:
                server = self._servers.get_nowait()
            except queue.Empty:
                break
            if server.proc.poll() is None:
                return server
            log.warning("fork server %d exited (%s); starting a new one", server.proc.pid,
                        server.proc.returncode)
            with self._lock:
                self._all_servers.remove(server)
        server = self._start_server()
        with self._lock:
            self._all_servers.append(server)
        return server

    @staticmethod
    def _start_server(attempts: int = _SERVER_START_ATTEMPTS) -> ForkServer:
        """Start a fork server, retrying a start that was killed from outside.

        Seen under Ray: a server started right after its actor was restarted can be SIGKILLed
        by Ray's clean-up of the dead actor's processes. A start that keeps failing is an
        infrastructure error and propagates.
        """
        for attempt in range(1, attempts + 1):
            try:
                return ForkServer()
            except SandboxError as exc:
                if attempt == attempts:
                    raise
                log.warning("%s; retrying (%d/%d)", exc, attempt, attempts - 1)
                time.sleep(0.2 * attempt)
        raise AssertionError("unreachable")

    def _release(self, server: ForkServer) -> None:
        self._servers.put(server)

    def close(self) -> None:
        """Stop every fork server."""
        with self._lock:
            servers, self._all_servers = self._all_servers, []
        for s in servers:
            s.close()
        self._servers = queue.SimpleQueue()

    def __enter__(self) -> "Judge":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ problems
    @property
    def problems(self) -> tuple[Problem, ...]:
        """The problems, with reference timings where measured."""
        return tuple(self._problems.values())

    def problem(self, name: str) -> Problem:
        """The named problem; unknown names are a caller error."""
        try:
            return self._problems[name]
        except KeyError:
            raise ValueError(f"unknown QuixBugs problem {name!r}") from None

    def calibrate(self, names: Optional[Iterable[str]] = None) -> tuple[Problem, ...]:
        """Measure the reference fix's per-test seconds and the buggy program's pass count
        (once per problem); calibrated problems."""
        for name in (names if names is not None else list(self._problems)):
            self._calibrated(name)
        return self.problems

    def _calibrated(self, name: str) -> Problem:
        """The problem with reference timings, measuring them on first use."""
        problem = self.problem(name)
        if problem.reference_seconds and problem.buggy_passed is not None:
            return problem
        with self._lock:
            lock = self._calibrating.setdefault(name, threading.Lock())
        with lock:
            problem = self._problems[name]
            if problem.reference_seconds and problem.buggy_passed is not None:
                return problem
            limits = [self.sandbox.candidate_timeout_s] * len(problem.tests)
            ref = Candidate("reference", name, problem.reference_source)
            outcome = self._run(ref, problem, limits)
            if outcome.passed != outcome.total:
                log.warning("reference fix of %s passes %d/%d tests", name, outcome.passed,
                            outcome.total)
            seconds = tuple(max(t.seconds, 1e-6) for t in outcome.tests)
            problem = replace(problem, reference_seconds=seconds)
            problem = replace(problem, buggy_passed=self._buggy_passed(problem))
            self._problems[name] = problem
            return problem

    def _buggy_passed(self, problem: Problem) -> int:
        """Tests the buggy program passes under the usual limits: the baseline of `bugfix`."""
        buggy = Candidate("buggy", problem.name, problem.buggy_source)
        return self._run(buggy, problem, self.limits(problem)).passed

    def limits(self, problem: Problem) -> list[float]:
        """Per-test wall limits: max(time_floor_s, time_factor x reference seconds)."""
        return [max(self.sandbox.time_floor_s, self.sandbox.time_factor * s)
                for s in problem.reference_seconds]

    # ------------------------------------------------------------------ judging
    def judge_untrusted(self, candidate: Candidate) -> Verdict:
        """DANGER (isolated): run `candidate` against its problem's tests in a fresh process.

        The buggy function handed back (AST-equal, coral.judge.unchanged) is not run: UNCHANGED.
        """
        problem = self._calibrated(candidate.problem)
        if is_unchanged(candidate.code, problem.buggy_source, problem.function):
            return Verdict(candidate.genome_id, problem.name, CandidateStatus.UNCHANGED,
                           detail="the buggy function, unchanged")
        return self._run(candidate, problem, self.limits(problem))

    judge = judge_untrusted

    def judge_many(self, candidates: Sequence[Candidate]) -> list[Verdict]:
        """Judge several candidates, `workers` at a time; outcomes in input order."""
        if self.workers == 1 or len(candidates) < 2:
            return [self.judge(c) for c in candidates]
        with ThreadPoolExecutor(self.workers) as pool:
            return list(pool.map(self.judge, candidates))

    def _run(self, candidate: Candidate, problem: Problem, limits: list[float]) -> Verdict:
        """Parse here (cheap, never executes), then run in the fork server and compare here."""
        def outcome(status: CandidateStatus, tests=(), seconds=0.0, detail="") -> Verdict:
            return Verdict(candidate.genome_id, problem.name, status, tuple(tests),
                               seconds, detail)

        if len(candidate.code) > MAX_SOURCE_CHARS:
            return outcome(CandidateStatus.SYNTAX_ERROR, detail="source too large")
        try:
            ast.parse(candidate.code)
        except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
            return outcome(CandidateStatus.SYNTAX_ERROR, detail=str(exc)[:300])
        sb = self.sandbox
        req = {"source": candidate.code, "function": problem.function,
               "tests": [{"inputs": t.inputs, "graph": t.graph, "projection": t.projection,
                          "limit_s": lim} for t, lim in zip(problem.tests, limits)],
               "budget_s": sb.candidate_timeout_s, "load_limit_s": sb.time_floor_s,
               "deny_read": self._deny_read,
               "limits": {"memory_mb": sb.memory_mb, "max_output_bytes": sb.max_output_bytes,
                          "max_processes": sb.max_processes}}
        # A server that dies under a candidate may have been killed from outside (e.g. the
        # actor's process group being torn down): retry once on a fresh server, and only a
        # second death is blamed on the candidate.
        for attempt in (1, 2):
            server = self._acquire()
            resp = server.request(req)
            if resp is not None:
                self._release(server)
                break
            server.close()
            with self._lock:
                if server in self._all_servers:
                    self._all_servers.remove(server)
            log.warning("fork server died judging %s/%s (attempt %d)", candidate.genome_id,
                        problem.name, attempt)
        else:
            return outcome(CandidateStatus.CRASH, detail="sandbox server died")
        if resp["status"] == "SETUP":
            raise SandboxError(f"sandbox setup failed: {resp['detail']}")
        tests = [self._verdict(i, r, problem) for i, r in enumerate(resp["tests"])]
        detail = resp["detail"]
        if resp.get("output"):
            shown = resp["output"]
            if len(shown) > 500:
                shown = shown[:500] + " [output truncated]"
            detail = (detail + "\n" if detail else "") + "output: " + shown
        return outcome(CandidateStatus(resp["status"]), tests, resp["seconds"], detail)

    @staticmethod
    def _verdict(index: int, raw: dict, problem: Problem) -> CaseResult:
        """Compare one raw child result with the expected answer (here, in the judge)."""
        seconds = float(raw.get("seconds", 0.0))
        if raw["status"] != "RAN":
            return CaseResult(index, CaseStatus(raw["status"]), seconds, raw.get("detail", ""))
        case = problem.tests[index]
        try:
            actual = codec.loads(raw["out"])
        except ValueError as exc:
            return CaseResult(index, CaseStatus.ERROR, seconds, f"unreadable result: {exc}")
        if outputs_match(actual, case.expected, case.abs_tol):
            return CaseResult(index, CaseStatus.PASS, seconds)
        shown = repr(actual)
        return CaseResult(index, CaseStatus.FAIL, seconds,
                          f"got {shown[:120]}{'...' if len(shown) > 120 else ''}")
