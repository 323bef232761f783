"""The fork server of the sandbox: a zygote that forks candidate processes, and their supervisor.

Started by coral.judge.sandbox as ``python -I -S -c ... main()``, inside bubblewrap under the
kernel boundary (coral.judge.boundary). Two processes:

- the *supervisor* (this process) talks to the judge: its first stdin line is the set-up
  (seccomp program, work dir), then one JSON request per line, each answered by one JSON line
  on stdout carrying the request's id;
- the *zygote*, forked at start-up before any request is read, so its memory never holds a
  candidate's source or results: on the supervisor's word it forks one candidate process
  (coral.judge.candidate) and reports its pid, then kills it, reaps it and reports its exit
  status (only the parent may signal a pid: once reaped, the pid may be someone else's).

Per candidate process the zygote makes a fresh result pipe (its read end reaches the
supervisor over a UNIX socket, SCM_RIGHTS), so nothing a candidate does to its pipe's flags,
size or owner reaches the next; the supervisor resets the work dir's own metadata (xattrs,
mode, times) before the process starts, writes the job (source, test inputs — never expected
answers —, limits) into the job pipe, reads the candidate's result lines with per-test
deadlines, has the zygote end the process and empties the work dir. The time from the job's
hand-over to "loaded" (the module's top level) is added to the first test the process runs:
work done at import is the candidate's time. After each request the supervisor compares its
own and the zygote's rlimits and scheduling with what they were at start, and asks to be
replaced if anything changed. It exits when the judge closes its
stdin, even mid-candidate. A test that times out or kills its process is recorded
and the remaining tests continue in a fresh process, until the candidate's budget runs out.
Nothing a candidate sends is trusted: frames are size-capped and schema-checked (`_Reader`),
and a server that saw a malformed frame asks the judge to retire it (``"recycle": true``).
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import struct
import sys
import time

from coral.judge import hygiene
from coral.judge.candidate import _LIBC, _PR_SET_PDEATHSIG, JOB_HEADER, run_candidate

MAX_RESULT_BYTES = 8 * 1024 * 1024   # per candidate process, everything it writes
MAX_RESPONSE_CHARS = 16 * 1024 * 1024  # outputs kept per request, over all its processes
_ZYGOTE_S = 5.0  # the zygote answers within this or the server is broken
_PID_MSG = struct.Struct("<Bi")

# Message kinds a candidate process sends (coral.judge.candidate) ...
LOADED = "loaded"      # module executed and the function exists
RESULT = "r"           # one test: {"i": index, "out": wire text} or {"i": index, "err": text}
END = "end"            # all tests answered: {"output": captured stdout}
CRASH = "crash"        # module raised: {"detail", "output"}
MISSING = "missing"    # module loaded but defines no such function: {"output"}
SETUP = "setup"        # confinement failed (the server's fault, not the candidate's)
# ... and the ones the reader makes up.
TIMEOUT = "timeout"    # the current deadline passed
EOF = "eof"            # the pipe closed: the process ended
BAD = "bad"            # a malformed, oversized or out-of-schema frame
_FIELDS = {LOADED: {}, END: {"output": str}, CRASH: {"detail": str, "output": str},
           MISSING: {"output": str}, SETUP: {"detail": str}}

# Phases of one candidate process and what each message does there (`_step`):
#   phase  message                 next / effect
#   load   LOADED                  test: the first test's clock starts
#   load   CRASH MISSING SETUP     stop: candidate CRASH / MISSING_FUNCTION / server SETUP error
#   load   TIMEOUT EOF BAD         stop: candidate TIMEOUT / CRASH / CRASH
#   test   RESULT for current i    test (next test's clock) or done after the last one
#   test   TIMEOUT                 test TIMEOUT; a fresh process runs the tests after it
#   test   anything else           test ERROR; a fresh process runs the tests after it
#   done   END                     stop, keeping the captured output
#   done   anything else           stop
LOAD, TEST, DONE = "load", "test", "done"
_LOAD_END = {CRASH: "CRASH", MISSING: "MISSING_FUNCTION", SETUP: "SETUP", TIMEOUT: "TIMEOUT",
             EOF: "CRASH", BAD: "CRASH"}


class _Reader:
    """Line reader over a candidate's result pipe: deadlines, a byte cap, a strict schema."""

    def __init__(self, fd: int) -> None:
        self.fd, self.buf, self.total, self.eof = fd, b"", 0, False
        # The judge sends nothing while a request runs: its end of stdin becoming readable
        # means it closed (it died): stop at once, taking every candidate process along.
        self.judge_fd = sys.stdin.fileno()
        self.bad = False  # a malformed frame was seen: the supervisor recycles the server

    def next(self, deadline: float) -> tuple[str, dict]:
        """(kind, message): the next valid frame, or TIMEOUT / EOF / BAD."""
        while b"\n" not in self.buf:
            if self.eof:
                return EOF, {}
            left = deadline - time.monotonic()
            ready = select.select([self.fd, self.judge_fd], [], [], max(left, 0))[0]
            if self.judge_fd in ready:
                raise ServerBroken("the judge closed the request pipe")
            if not ready:
                return TIMEOUT, {}
            chunk = os.read(self.fd, 1 << 16)
            self.total += len(chunk)
            self.eof = not chunk
            if self.total > MAX_RESULT_BYTES:
                self.eof = True
                return self._bad("result too large")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return self._parse(line)

    def _bad(self, detail: str) -> tuple[str, dict]:
        self.bad = True
        return BAD, {"detail": detail}

    def _parse(self, line: bytes) -> tuple[str, dict]:
        """Check one frame against the schema of its kind."""
        try:
            msg = json.loads(line)
        except (ValueError, RecursionError, MemoryError):
            return self._bad("malformed message from the candidate process")
        kind = msg.get("k") if type(msg) is dict else None
        if type(kind) is not str or (kind != RESULT and kind not in _FIELDS):
            return self._bad("message of unknown kind")
        fields = {"i": int, "out": str} if "out" in msg else {"i": int, "err": str}
        fields = fields if kind == RESULT else _FIELDS[kind]
        if set(msg) != {"k", *fields} or any(type(msg[f]) is not t for f, t in fields.items()):
            return self._bad(f"message {kind!r} out of schema")
        return kind, msg


class Ports:
    """The supervisor's ends of the zygote's channels, the zygote's pid, and the read end of
    the current candidate process's result pipe (-1 between processes)."""

    def __init__(self, ctl: int, pids: socket.socket, job: int, zygote: int) -> None:
        self.ctl, self.pids, self.job, self.zygote = ctl, pids, job, zygote
        self.results = -1
        self.root_state: tuple = ()  # the work dir's metadata at start (`root_state`)


def start_zygote(setup: dict) -> Ports:
    """Fork the zygote now, while this process has read no request."""
    ctl_r, ctl_w = os.pipe()
    pid_sup, pid_zyg = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    job_r, job_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            for fd in (ctl_w, job_w):
                os.close(fd)
            pid_sup.close()
            null = os.open(os.devnull, os.O_RDWR)
            os.dup2(null, 0)
            os.dup2(null, 1)  # the judge's pipes stay with the supervisor alone
            _zygote(ctl_r, pid_zyg, job_r, setup)
        finally:
            os._exit(0)
    for fd in (ctl_r, job_r):
        os.close(fd)
    pid_zyg.close()
    os.set_blocking(job_w, False)
    return Ports(ctl_w, pid_sup, job_w, pid)


def _zygote(ctl: int, pids: socket.socket, job: int, setup: dict) -> None:
    """Per "f" on `ctl` fork one candidate process with a fresh result pipe and report its
    pid, with the pipe's read end; on the "k" that follows, kill it and its session, reap it
    and report its exit status. Only the zygote, its parent, kills it, and before reaping it:
    the pid cannot have been reused."""
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)  # die with the supervisor
    while os.read(ctl, 1) == b"f":
        res_r, res_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(ctl)
            os.close(res_r)
            pids.close()
            run_candidate(job, res_w, setup)
        os.close(res_w)
        socket.send_fds(pids, [_PID_MSG.pack(0, pid)], [res_r])
        os.close(res_r)
        os.read(ctl, 1)  # "k" (or the supervisor is gone: kill it all the same)
        for kill in (os.killpg, os.kill):
            try:
                kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        _, status = os.waitpid(pid, 0)
        pids.send(_PID_MSG.pack(1, status))


class ServerBroken(RuntimeError):
    """The zygote or a pipe of this server failed: the server exits and the judge restarts it."""


def _from_zygote(ports: Ports, expected: int) -> int:
    """The zygote's next report (0: pid, with the result pipe's read end, which becomes
    `ports.results`; 1: exit status), within `_ZYGOTE_S`."""
    if not select.select([ports.pids], [], [], _ZYGOTE_S)[0]:
        raise ServerBroken("zygote did not answer")
    data, fds, _, _ = socket.recv_fds(ports.pids, _PID_MSG.size, 1)
    if len(data) != _PID_MSG.size or data[0] != expected or len(fds) != (expected == 0):
        for fd in fds:
            os.close(fd)
        raise ServerBroken("zygote channel broken")
    if fds:
        os.set_blocking(fds[0], False)
        ports.results = fds[0]
    return _PID_MSG.unpack(data)[1]


def _write_job(ports: Ports, line: bytes, start: int) -> None:
    """The job (the request line as received, and the first test to run) into the job pipe,
    within `_ZYGOTE_S` (the process reads it at once)."""
    data = memoryview(JOB_HEADER.pack(len(line), start) + line)
    end = time.monotonic() + _ZYGOTE_S
    while data:
        if not select.select([], [ports.job], [], max(0.0, end - time.monotonic()))[1]:
            raise ServerBroken("candidate process did not read its job")
        try:
            data = data[os.write(ports.job, data):]
        except BlockingIOError:
            continue


def _end_process(ports: Ports) -> str:
    """Have the zygote kill and reap the process, drain its pipe; describe how it ended."""
    os.write(ports.ctl, b"k")
    status = _from_zygote(ports, 1)
    if ports.results >= 0:  # its pipe goes with it: the next process gets a fresh one
        os.close(ports.results)
        ports.results = -1
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    return f"exited with code {os.WEXITSTATUS(status)}"


class _Run:
    """One request: the raw results of its tests and the response being built."""

    def __init__(self, line: bytes, root: str) -> None:
        self.line, self.root = line, root
        req = self.req = json.loads(line)
        self.tests, self.n = req["tests"], len(req["tests"])
        self.results: list = [None] * self.n
        self.t0 = time.monotonic()
        self.deadline = self.t0 + req["budget_s"]
        self.status, self.detail, self.output = "OK", "", ""
        self.recycle, self.kept = False, 0

    def record(self, i: int, status: str, seconds: float, out=None, detail: str = "") -> None:
        """The raw result of test i; outputs beyond MAX_RESPONSE_CHARS become errors."""
        if out is not None:
            self.kept += len(out)
            if self.kept > MAX_RESPONSE_CHARS:
                status, out, detail = "ERROR", None, "result too large"
        self.results[i] = {"status": status, "seconds": seconds, "out": out,
                           "detail": detail[:300]}

    def keep_output(self, text: str) -> None:
        """What the candidate printed (capped)."""
        self.output = text[: self.req["limits"]["max_output_bytes"] + 64]

    def limit_end(self, i: int, now: float) -> float:
        """Deadline of test i started at `now`."""
        return min(now + self.tests[i]["limit_s"], self.deadline)

    def response(self) -> dict:
        """The answer line: tests never reached count as timed out."""
        for i in range(self.n):
            if self.results[i] is None:
                self.record(i, "TIMEOUT", 0.0, detail="candidate time limit")
                self.status, self.detail = "TIMEOUT", "candidate time limit"
        return {"id": self.req["id"], "status": self.status, "detail": self.detail[:300],
                "output": self.output, "tests": self.results, "recycle": self.recycle,
                "seconds": time.monotonic() - self.t0}


class _Process:
    """One candidate process being supervised: phase, current test, its clock and deadline."""

    def __init__(self, run: _Run, ports: Ports, start: int) -> None:
        try:
            hygiene.reset(run.root, ports.root_state)
        except OSError as exc:
            raise ServerBroken(str(exc)) from None
        os.write(ports.ctl, b"f")
        self.pid = _from_zygote(ports, 0)
        _write_job(ports, run.line, start)
        self.reader = _Reader(ports.results)
        self.phase, self.cur, self.mark = LOAD, start, time.monotonic()
        self.load_s = 0.0  # charged to the first test this process runs
        self.limit_end = min(self.mark + run.req["load_limit_s"], run.deadline)
        self.ended: tuple = ()  # (kind, message) when it stopped before finishing

    def spent(self, now: float) -> float:
        """Seconds of the current test, plus the module's load time if it is the first."""
        seconds, self.load_s = now - self.mark + self.load_s, 0.0
        return seconds


def _step(run: _Run, proc: _Process, kind: str, msg: dict, now: float) -> bool:
    """Apply one message (see the state table above); False when this process is done."""
    if proc.phase == LOAD and kind == LOADED:
        proc.phase, proc.load_s, proc.mark = TEST, now - proc.mark, now
        proc.limit_end = run.limit_end(proc.cur, now)
        return True
    if proc.phase == TEST and kind == RESULT and msg["i"] == proc.cur:
        if "out" in msg:
            run.record(proc.cur, "RAN", proc.spent(now), out=msg["out"])
        else:
            run.record(proc.cur, "ERROR", proc.spent(now), detail=msg["err"])
        proc.cur, proc.mark = proc.cur + 1, now
        if proc.cur < run.n:
            proc.limit_end = run.limit_end(proc.cur, now)
        else:  # all answered; wait briefly for the captured output
            proc.phase, proc.limit_end = DONE, now + run.req["load_limit_s"]
        return True
    if proc.phase == DONE:
        if kind == END:
            run.keep_output(msg["output"])
        return False
    proc.ended = (kind, msg)
    return False


def _load_failed(run: _Run, proc: _Process, why: str) -> None:
    """The process stopped before its module loaded: the candidate's status says why."""
    kind, msg = proc.ended
    run.status = _LOAD_END.get(kind, "CRASH")
    run.detail = msg.get("detail") or {TIMEOUT: "module load timed out",
                                       MISSING: f"{run.req['function']} not defined",
                                       EOF: f"process {why} while loading"}.get(kind, kind)
    if kind in (CRASH, MISSING):
        run.keep_output(msg["output"])
    for i in range(proc.cur, run.n):
        run.record(i, "TIMEOUT" if run.status == "TIMEOUT" else "ERROR", 0.0, detail=run.detail)


def _run_process(run: _Run, ports: Ports, start: int) -> int:
    """Run tests from `start` in one fresh process; the next start (n when finished)."""
    proc = _Process(run, ports, start)
    try:
        while _step(run, proc, *proc.reader.next(proc.limit_end), time.monotonic()):
            pass
    finally:
        why = _end_process(ports)
        run.recycle |= proc.reader.bad | (not hygiene.empty(run.root))
    if not proc.ended:
        return run.n
    if proc.phase == LOAD:
        _load_failed(run, proc, why)
        return run.n
    kind, msg = proc.ended
    timed_out = kind == TIMEOUT
    run.record(proc.cur, "TIMEOUT" if timed_out else "ERROR", proc.spent(time.monotonic()),
               detail="test time limit" if timed_out else msg.get("detail") or f"process {why}")
    return proc.cur + 1


def supervise(line: bytes, root: str, ports: Ports) -> dict:
    """Run one candidate's tests (request `line`) in as many processes as needed; the raw
    response."""
    run = _Run(line, root)
    start = 0
    while start < run.n:
        if time.monotonic() >= run.deadline:
            run.status, run.detail = "TIMEOUT", "candidate time limit"
            break
        start = _run_process(run, ports, start)
    return run.response()


def main() -> None:
    """Serve: the set-up line, then one response line per request line, until stdin closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the judge stops us by closing stdin
    stdin, out = sys.stdin.buffer, sys.stdout
    setup = json.loads(stdin.readline())
    ports = start_zygote(setup)
    ports.root_state = hygiene.root_state(setup["root"])
    start = hygiene.fingerprint(ports.zygote)
    out.write(json.dumps({"ready": True, "pid": os.getpid(), "root": setup["root"]}) + "\n")
    out.flush()
    for line in stdin:
        resp = supervise(line.rstrip(b"\n"), setup["root"], ports)
        # limits or scheduling changed: the judge replaces this server
        resp["recycle"] |= hygiene.fingerprint(ports.zygote) != start
        out.write(json.dumps(resp, separators=(",", ":")) + "\n")
        out.flush()
