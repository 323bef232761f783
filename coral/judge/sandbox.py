"""The judge: runs untrusted candidate programs against QuixBugs tests behind a boundary.

DANGER: candidates are model-written code and are treated as hostile. `Judge.judge_untrusted`
(alias `judge`) never runs them in this process: it sends the source and the test *inputs* to
a fork server (coral.judge.child, started by coral.judge.server inside the isolation chosen by
coral.judge.boundary: bubblewrap namespaces + seccomp, or the in-process guard alone), which
forks one process per candidate from a zygote that never saw another candidate. The expected
answers stay here; results come back as tagged JSON (never pickle), are checked against a
strict schema and request id, decoded without building hashed containers and compared here.
A server that times out, dies or answers out of schema is killed and replaced, and the
candidate retried once on a fresh server; a second failure is the candidate's verdict
(TIMEOUT or CRASH). See docs/judge.md for what holds and the tests that show it.
"""

from __future__ import annotations

import ast
import logging
import queue
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Iterable, Optional, Sequence

from coral.judge import boundary, codec
from coral.config import SandboxConfig
from coral.messages import Candidate, CandidateStatus, Verdict, CaseResult, CaseStatus
from coral.judge.quixbugs import PARSE_ERRORS, Problem, outputs_match
from coral.judge.server import ForkServer, SandboxError
from coral.judge.unchanged import is_unchanged

log = logging.getLogger(__name__)

MAX_SOURCE_CHARS = 100_000
_SERVER_START_ATTEMPTS = 3
_SERVER_SLACK_S = 5.0  # beyond the candidate's budget before the judge gives up on a server
DECODE_FLOOR_S = 1.0  # judge CPU seconds a candidate's results may always cost to decode

__all__ = ["Judge", "SandboxError", "MAX_SOURCE_CHARS"]


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
        self.isolation = boundary.choose(sandbox.isolation)  # logs which, at start
        # Servers are started from this one thread, alive as long as the judge: bwrap's
        # --die-with-parent death signal fires when the thread that forked it ends.
        self._spawner = ThreadPoolExecutor(1, thread_name_prefix="coral-sandbox-spawn")

    # ------------------------------------------------------------------ servers
    def _acquire(self) -> ForkServer:
        """A free fork server, started lazily (so it starts inside the actor process)."""
        while True:
            try:
                server = self._servers.get_nowait()
            except queue.Empty:
                break
            if server.alive:
                return server
            log.warning("fork server %d exited (%s); starting a new one", server.proc.pid,
                        server.proc.returncode)
            self._retire(server)
        server = self._start_server()
        with self._lock:
            self._all_servers.append(server)
        return server

    def _start_server(self, attempts: int = _SERVER_START_ATTEMPTS) -> ForkServer:
        """Start a fork server, retrying a start that was killed from outside.

        Seen under Ray: a server started right after its actor was restarted can be SIGKILLed
        by Ray's clean-up of the dead actor's processes. A start that keeps failing is an
        infrastructure error and propagates.
        """
        for attempt in range(1, attempts + 1):
            try:
                return self._spawner.submit(ForkServer, self.isolation, self.sandbox.work_dir_mb,
                                            self.sandbox.max_processes).result()
            except SandboxError as exc:
                if attempt == attempts:
                    raise
                log.warning("%s; retrying (%d/%d)", exc, attempt, attempts - 1)
                time.sleep(0.2 * attempt)
        raise AssertionError("unreachable")

    def _release(self, server: ForkServer) -> None:
        self._servers.put(server)

    def _retire(self, server: ForkServer) -> None:
        """Kill a server that failed, or that saw anything odd, and forget it."""
        server.kill()
        with self._lock:
            if server in self._all_servers:
                self._all_servers.remove(server)

    def close(self) -> None:
        """Stop every fork server."""
        with self._lock:
            servers, self._all_servers = self._all_servers, []
        for s in servers:
            s.close()
        self._servers = queue.SimpleQueue()
        self._spawner.shutdown(wait=False)
        self._spawner = ThreadPoolExecutor(1, thread_name_prefix="coral-sandbox-spawn")

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
        """Parse here (cheap, never executes), then run in a fork server and compare here."""
        def verdict(status: CandidateStatus, tests=(), seconds=0.0, detail="") -> Verdict:
            return Verdict(candidate.genome_id, problem.name, status, tuple(tests), seconds,
                           detail)

        if len(candidate.code) > MAX_SOURCE_CHARS:
            return verdict(CandidateStatus.SYNTAX_ERROR, detail="source too large")
        try:
            ast.parse(candidate.code)
        except PARSE_ERRORS as exc:
            return verdict(CandidateStatus.SYNTAX_ERROR, detail=str(exc)[:300])
        resp, why = self._exchange(self._request(candidate, problem, limits))
        if resp is None:
            status = CandidateStatus.TIMEOUT if why == "timed out" else CandidateStatus.CRASH
            return verdict(status, detail=f"sandbox server {why}")
        if resp["status"] == "SETUP":
            raise SandboxError(f"sandbox setup failed: {resp['detail']}")
        return verdict(CandidateStatus(resp["status"]), self._compare(resp, problem),
                       resp["seconds"], self._detail(resp))

    def _request(self, candidate: Candidate, problem: Problem, limits: list[float]) -> dict:
        """The request for the fork server: inputs and limits, never the expected answers."""
        sb = self.sandbox
        return {"id": secrets.token_hex(8), "source": candidate.code,
                "function": problem.function,
                "tests": [{"inputs": t.inputs, "graph": t.graph, "projection": t.projection,
                           "limit_s": lim} for t, lim in zip(problem.tests, limits)],
                "budget_s": sb.candidate_timeout_s, "load_limit_s": sb.time_floor_s,
                "deny_read": self._deny_read,
                "limits": {"memory_mb": sb.memory_mb, "max_output_bytes": sb.max_output_bytes,
                           "max_processes": sb.max_processes}}

    def _exchange(self, req: dict) -> tuple[Optional[dict], str]:
        """(response, "") from a server, or (None, why) after two servers failed on it.

        A server that fails may have been killed from outside (e.g. the actor's process group
        being torn down): the request is retried once on a fresh server, and only a second
        failure is blamed on the candidate.
        """
        timeout = req["budget_s"] + req["load_limit_s"] + _SERVER_SLACK_S
        why = ""
        for attempt in (1, 2):
            server = self._acquire()
            resp, why = server.request(req, timeout)
            if resp is not None:
                if resp["recycle"]:
                    self._retire(server)  # it saw a malformed frame: start afresh
                else:
                    self._release(server)
                return resp, ""
            self._retire(server)
            log.warning("fork server %s (attempt %d); killed it", why, attempt)
        return None, why

    @staticmethod
    def _detail(resp: dict) -> str:
        """The candidate's detail line plus what it printed (shortened)."""
        detail, shown = resp["detail"], resp["output"]
        if shown:
            if len(shown) > 500:
                shown = shown[:500] + " [output truncated]"
            detail = (detail + "\n" if detail else "") + "output: " + shown
        return detail

    def _compare(self, resp: dict, problem: Problem) -> list[CaseResult]:
        """Decode and compare each test's result here, on a budget charged to the candidate:
        this thread's CPU time may run to what is left of its budget (at least
        `DECODE_FLOOR_S`), and what each test's decoding costs is added to its seconds."""
        left = max(DECODE_FLOOR_S, self.sandbox.candidate_timeout_s - resp["seconds"])
        deadline = time.thread_time() + left
        return [_verdict(i, r, problem, deadline) for i, r in enumerate(resp["tests"])]


def _verdict(index: int, raw: dict, problem: Problem, cpu_deadline: float) -> CaseResult:
    """Compare one raw child result with the expected answer (here, in the judge). Whatever
    the comparison raises is the test's FAIL, never the judge's exception."""
    seconds = float(raw["seconds"])
    if raw["status"] != "RAN":
        return CaseResult(index, CaseStatus(raw["status"]), seconds, raw["detail"])
    case = problem.tests[index]
    t0 = time.thread_time()
    try:
        actual = codec.loads_result(raw["out"], cpu_deadline)
    except codec.DecodeBudgetExceeded:
        return CaseResult(index, CaseStatus.ERROR, seconds + time.thread_time() - t0,
                          "result too costly to decode (the candidate's budget is spent)")
    except Exception as exc:  # noqa: BLE001 - ValueError, MemoryError ...: unreadable
        return CaseResult(index, CaseStatus.ERROR, seconds + time.thread_time() - t0,
                          f"unreadable result: {exc}"[:300])
    try:
        status = CaseStatus.PASS if outputs_match(actual, case.expected, case.abs_tol) \
            else CaseStatus.FAIL
        shown = "" if status is CaseStatus.PASS else repr(actual)
        detail = shown and f"got {shown[:120]}{'...' if len(shown) > 120 else ''}"
    except Exception as exc:  # noqa: BLE001 - e.g. OverflowError, a repr too deep or long
        status, detail = CaseStatus.FAIL, f"comparison failed: {type(exc).__name__}"
    return CaseResult(index, status, seconds + time.thread_time() - t0, detail)
