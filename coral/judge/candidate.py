"""DANGER: the code that runs inside one candidate process, around the candidate's own code.

The zygote of coral.judge.child forks this process; `run_candidate` reads its job (the
candidate source, the tests' inputs, limits) from a private pipe, confines itself — own
session, stdio to /dev/null, fds closed, rlimits, under the kernel boundary the seccomp
filter of coral.judge.seccomp, then the audit guard — and only then executes the candidate,
writing one JSON line per event to its result pipe (kinds in coral.judge.child). The
candidate may rewrite anything in this process: nothing here is trusted by the server or the
judge, and nothing here belongs to another candidate (the zygote never holds candidate data).
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import signal
import struct
import sys
import types

from coral.judge import codec
from coral.judge.guard import install_guard

# Pre-imported so candidates do not pay for them (most QuixBugs programs use these).
PRELOADED = tuple(__import__(m) for m in ("bisect", "collections", "copy", "functools", "heapq",
                                          "itertools", "math", "random", "re", "string"))

_LIBC = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1
_PR_SET_NO_NEW_PRIVS = 38
_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2
RESULT_FD = 3  # the result pipe, moved here; every other inherited fd is closed
JOB_HEADER = struct.Struct("<QI")  # length of the request line, index of the first test


class Node:
    """Upstream QuixBugs node.py, verbatim in behaviour (shared mutable defaults included)."""

    def __init__(self, value=None, successor=None, successors=[], predecessors=[],
                 incoming_nodes=[], outgoing_nodes=[]):
        self.value = value
        self.successor = successor
        self.successors = successors
        self.predecessors = predecessors
        self.incoming_nodes = incoming_nodes
        self.outgoing_nodes = outgoing_nodes


def _build_graph(spec_text: str) -> list:
    """Nodes as the upstream test builds them: constructor args, then attribute assignments."""
    spec = json.loads(spec_text)
    nodes: list = []
    for value, succ, succs in spec["nodes"]:
        args = [value, nodes[succ] if succ is not None else None]
        if succs is not None:
            args.append([nodes[i] for i in succs])
        nodes.append(Node(*args))
    for idx, attr, ref in spec["sets"]:
        setattr(nodes[idx], attr, [nodes[i] for i in ref] if isinstance(ref, list) else nodes[ref])
    return nodes


def _project(result, projection: str, nodes: list):
    """Read the candidate's result the way the upstream test asserts on it."""
    if projection == "truthy":
        return bool(result)
    if projection == "values":
        return [x.value for x in result]
    if projection == "linked":
        if not result:
            return [None, []]
        index = next((i for i, n in enumerate(nodes) if n is result), -1)
        values, steps = [], 0
        while result and steps < 10_000:  # a cyclic answer must not loop forever
            values.append(result.value)
            result, steps = result.successor, steps + 1
        return [index, values]
    return result


class _CappedText:
    """sys.stdout/sys.stderr replacement keeping the first `cap` characters."""

    def __init__(self, cap: int) -> None:
        self.cap, self.parts, self.size = cap, [], 0

    def write(self, text) -> int:
        text = str(text)
        if self.size < self.cap:
            self.parts.append(text[: self.cap - self.size])
        self.size += len(text)
        return len(text)

    def flush(self) -> None:
        """Nothing to flush."""

    def getvalue(self) -> str:
        """Captured text, with a marker if output was cut."""
        out = "".join(self.parts)
        return out + ("\n[output truncated]" if self.size > self.cap else "")


def send(fd: int, msg: dict) -> None:
    """One JSON line to the server (whole write, retried on short writes)."""
    data = (json.dumps(msg, separators=(",", ":")) + "\n").encode()
    while data:
        data = data[os.write(fd, data):]


def read_job(fd: int, setup: dict) -> dict:
    """The job the server wrote for this process (header, then its request line as received),
    plus the server's set-up (work dir, seccomp program) this process inherited."""
    def exactly(n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = os.read(fd, n - len(buf))
            if not chunk:
                raise EOFError("job pipe closed")
            buf += chunk
        return buf
    size, start = JOB_HEADER.unpack(exactly(JOB_HEADER.size))
    job = json.loads(exactly(size))
    job.update(start=start, workdir=setup["root"], seccomp=setup["seccomp"])
    return job


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def load_seccomp(program: bytes) -> None:
    """Load a compiled BPF filter (coral.judge.seccomp) into this process, irreversibly."""
    buf = ctypes.create_string_buffer(program, len(program))
    prog = _SockFprog(len(program) // 8, ctypes.addressof(buf))
    if (_LIBC.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
            or _LIBC.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0) != 0):
        err = ctypes.get_errno()
        raise OSError(err, f"seccomp filter not loaded: {os.strerror(err)}")


def _set_limits(limits: dict, budget_s: float) -> None:
    """rlimits: CPU seconds, address space, file size, open files, processes, no core."""
    mem = limits["memory_mb"] * 1024 * 1024
    for res, value in ((resource.RLIMIT_CPU, int(budget_s) + 2), (resource.RLIMIT_AS, mem),
                       (resource.RLIMIT_FSIZE, limits["max_output_bytes"] * 16),
                       (resource.RLIMIT_NOFILE, 64), (resource.RLIMIT_CORE, 0),
                       (resource.RLIMIT_NPROC, limits["max_processes"])):
        resource.setrlimit(res, (value, value))


def _redirect(workdir: str) -> None:
    """Own session; stdio on /dev/null; every fd but those and the result pipe closed."""
    os.setsid()
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)  # die with the zygote
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.closerange(RESULT_FD + 1, 1 << 20)  # close_range(2): the zygote's and server's pipes
    os.chdir(workdir)


def _confine(job: dict) -> _CappedText:
    """Everything between fork and the candidate's first line."""
    _redirect(job["workdir"])
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # oversize writes fail, not kill
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    _set_limits(job["limits"], job["budget_s"])
    sys.dont_write_bytecode = True
    capture = _CappedText(job["limits"]["max_output_bytes"])
    sys.stdout = sys.stderr = capture
    node_module = types.ModuleType("node")  # `from node import Node` works as upstream
    node_module.Node = Node
    sys.modules["node"] = node_module
    if job["seccomp"]:  # before the guard, which refuses ctypes
        load_seccomp(bytes.fromhex(job["seccomp"]))
    install_guard(job["workdir"], job.get("deny_read", ()))
    return capture


def run_candidate(job_fd: int, result_fd: int, setup: dict) -> None:
    """DANGER: read the job, confine this process, run the candidate's tests; never returns."""
    exit_now = os._exit  # captured before candidate code can replace it
    out = result_fd
    try:
        job = read_job(job_fd, setup)
        os.dup2(result_fd, RESULT_FD)
        out = RESULT_FD
        capture = _confine(job)
    except BaseException as exc:  # setup failure is the server's problem, reported as such
        send(out, {"k": "setup", "detail": f"{type(exc).__name__}: {exc}"[:300]})
        exit_now(3)
    _run_tests(job, capture)
    exit_now(0)


def _describe(exc: BaseException) -> str:
    """Short text of a candidate exception (its __str__ may itself misbehave)."""
    try:
        return f"{type(exc).__name__}: {exc}"[:300]
    except BaseException:
        return type(exc).__name__


def _run_tests(job: dict, capture: _CappedText) -> None:
    """Load the module, report, then one result line per test (from job["start"])."""
    namespace = {"__name__": "candidate", "__builtins__": __builtins__}
    try:
        exec(compile(job["source"], "<candidate>", "exec"), namespace)  # noqa: S102 (sandboxed)
        fn = namespace.get(job["function"])
        loaded = callable(fn)
    except BaseException as exc:
        send(RESULT_FD, {"k": "crash", "detail": _describe(exc), "output": capture.getvalue()})
        return
    if not loaded:
        send(RESULT_FD, {"k": "missing", "output": capture.getvalue()})
        return
    send(RESULT_FD, {"k": "loaded"})
    for i in range(job["start"], len(job["tests"])):
        test = job["tests"][i]
        try:
            nodes = _build_graph(test["graph"]) if test["graph"] else []
            args = codec.loads(test["inputs"], nodes)
            result = _project(fn(*args), test["projection"], nodes)
            msg = {"k": "r", "i": i, "out": codec.dumps(result)}
        except BaseException as exc:
            msg = {"k": "r", "i": i, "err": _describe(exc)}
        send(RESULT_FD, msg)
    send(RESULT_FD, {"k": "end", "output": capture.getvalue()})
