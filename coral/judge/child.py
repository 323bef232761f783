"""The fork server of the sandbox, and the code that runs inside each candidate process.

DANGER: `run_untrusted_child` executes untrusted candidate code. It only ever runs in a
process forked for that one candidate by `serve` (``python -m coral.judge.child``), never in
the judge's own process. See coral/judge/sandbox.py for the guarantees and their limits.

Protocol. The judge writes one JSON request per line on the server's stdin and reads one JSON
response per line from its stdout. The request holds the candidate source, the function name
and, per test, only the encoded inputs and a time limit: the expected answers never leave
the judge. For each request the server forks a child (own session, rlimits, temp dir, audit
guard), reads the child's result lines from a private pipe with per-test deadlines, kills the
child's whole process group, and answers with the raw results (encoded outputs as text).
A test that times out or kills its process is recorded and the remaining tests continue in a
fresh child, until the candidate's wall budget runs out.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import select
import shutil
import signal
import sys
import tempfile
import time
import types

from coral.judge import codec
from coral.judge.guard import install_guard

# Pre-imported so candidates do not pay for them (most QuixBugs programs use these).
PRELOADED = tuple(__import__(m) for m in ("bisect", "collections", "copy", "functools", "heapq",
                                          "itertools", "math", "random", "re", "string"))

_LIBC = ctypes.CDLL(None, use_errno=True)
_CLONE_NEWNET = 0x40000000
_PR_SET_PDEATHSIG = 1
MAX_RESULT_BYTES = 8 * 1024 * 1024
_KILL_GRACE_S = 0.05


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


def _send(fd: int, msg: dict) -> None:
    """One JSON line to the server (whole write, retried on short writes)."""
    data = (json.dumps(msg, separators=(",", ":")) + "\n").encode()
    while data:
        data = data[os.write(fd, data):]


def _set_limits(req: dict) -> None:
    """rlimits of the candidate process (see the module docstring of coral.judge.sandbox)."""
    lim = req["limits"]
    cpu = int(req["budget_s"]) + 2
    mem = lim["memory_mb"] * 1024 * 1024
    for res, value in ((resource.RLIMIT_CPU, cpu), (resource.RLIMIT_AS, mem),
                       (resource.RLIMIT_FSIZE, lim["max_output_bytes"] * 16),
                       (resource.RLIMIT_NOFILE, 64), (resource.RLIMIT_CORE, 0),
                       (resource.RLIMIT_NPROC, lim["max_processes"])):
        resource.setrlimit(res, (value, value))


def run_untrusted_child(req: dict, start: int, wfd: int, workdir: str) -> None:
    """DANGER: in a freshly forked process, load the candidate and run tests from `start`."""
    write = os.write  # captured before candidate code can replace them
    exit_now = os._exit
    try:
        os.setsid()
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)  # die with the server
        null = os.open(os.devnull, os.O_RDONLY)
        out = os.open(os.path.join(workdir, ".output"), os.O_WRONLY | os.O_CREAT, 0o600)
        os.dup2(null, 0)
        os.dup2(out, 1)
        os.dup2(out, 2)
        os.chdir(workdir)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # oversize writes fail, not kill
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        _set_limits(req)
        sys.dont_write_bytecode = True
        capture = _CappedText(req["limits"]["max_output_bytes"])
        sys.stdout = sys.stderr = capture
        node_module = types.ModuleType("node")  # `from node import Node` works as upstream
        node_module.Node = Node
        sys.modules["node"] = node_module
        install_guard(workdir, req.get("deny_read", ()))
    except BaseException as exc:  # setup failure is the server's problem, reported as such
        _send(wfd, {"k": "setup", "detail": f"{type(exc).__name__}: {exc}"})
        exit_now(3)
    _run_tests(req, start, wfd, capture, write)
    exit_now(0)


def _describe(exc: BaseException) -> str:
    """Short text of a candidate exception (its __str__ may itself misbehave)."""
    try:
        return f"{type(exc).__name__}: {exc}"[:300]
    except BaseException:
        return type(exc).__name__


def _run_tests(req: dict, start: int, wfd: int, capture: _CappedText, write) -> None:
    """Load the module, report, then one result line per test."""
    namespace = {"__name__": "candidate", "__builtins__": __builtins__}
    try:
        exec(compile(req["source"], "<candidate>", "exec"), namespace)  # noqa: S102 (sandboxed)
        fn = namespace.get(req["function"])
        loaded = callable(fn)
    except BaseException as exc:
        _send(wfd, {"k": "crash", "detail": _describe(exc), "output": capture.getvalue()})
        return
    if not loaded:
        _send(wfd, {"k": "missing", "output": capture.getvalue()})
        return
    _send(wfd, {"k": "loaded"})
    for i in range(start, len(req["tests"])):
        test = req["tests"][i]
        try:
            nodes = _build_graph(test["graph"]) if test["graph"] else []
            args = codec.loads(test["inputs"], nodes)
            result = _project(fn(*args), test["projection"], nodes)
            msg = {"k": "r", "i": i, "out": codec.dumps(result)}
        except BaseException as exc:
            msg = {"k": "r", "i": i, "err": _describe(exc)}
        _send(wfd, msg)
    _send(wfd, {"k": "end", "output": capture.getvalue()})


def _kill_group(pid: int, grace: float) -> str:
    """Terminate, then kill, the child's whole process group; reap it; describe its end."""
    try:
        os.killpg(pid, signal.SIGTERM if grace > 0 else signal.SIGKILL)
    except ProcessLookupError:
        pass
    end = time.monotonic() + grace
    status = None
    while grace > 0 and time.monotonic() < end:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.005)
    try:
        os.killpg(pid, signal.SIGKILL)  # stragglers (and the leader if still alive)
    except ProcessLookupError:
        pass
    if not status:
        _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    return f"exited with code {os.WEXITSTATUS(status)}"


def _spawn(req: dict, start: int, root: str):
    """Fork one candidate process; return (pid, read fd, work dir)."""
    workdir = tempfile.mkdtemp(prefix="cand-", dir=root)
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(rfd)
        try:
            run_untrusted_child(req, start, wfd, workdir)
        finally:
            os._exit(4)
    os.close(wfd)
    return pid, rfd, workdir


class _Reader:
    """Line reader over a child's result pipe with deadlines and a byte cap."""

    def __init__(self, fd: int) -> None:
        self.fd, self.buf, self.total, self.eof = fd, b"", 0, False

    def next(self, deadline: float):
        """Next parsed message; None on timeout; {"k": "eof"} when the pipe closed."""
        while b"\n" not in self.buf:
            if self.eof:
                return {"k": "eof"}
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                return None
            chunk = os.read(self.fd, 1 << 16)
            self.total += len(chunk)
            if not chunk or self.total > MAX_RESULT_BYTES:
                self.eof = True
                if chunk:
                    return {"k": "bad", "detail": "result too large"}
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        try:
            msg = json.loads(line)
        except (ValueError, RecursionError):
            return {"k": "bad", "detail": "malformed message from candidate process"}
        return msg if isinstance(msg, dict) else {"k": "bad", "detail": "malformed message"}


def supervise(req: dict, root: str) -> dict:
    """Run one candidate's tests in as many child processes as needed; raw results."""
    tests = req["tests"]
    n = len(tests)
    results: list = [None] * n
    t0 = time.monotonic()
    deadline = t0 + req["budget_s"]
    resp = {"status": "OK", "detail": "", "output": ""}
    start = 0
    while start < n:
        if time.monotonic() >= deadline:
            resp["status"], resp["detail"] = "TIMEOUT", "candidate time limit"
            break
        pid, rfd, workdir = _spawn(req, start, root)
        reader = _Reader(rfd)
        cur, phase = start, "load"
        mark = time.monotonic()
        limit_end = min(mark + req["load_limit_s"], deadline)
        ended = None  # (kind, message) when this child stopped before finishing
        try:
            while True:
                msg = reader.next(limit_end)
                now = time.monotonic()
                kind = msg.get("k") if msg is not None else "timeout"
                if kind == "loaded" and phase == "load":
                    phase, mark = "test", now
                    limit_end = min(now + tests[cur]["limit_s"], deadline)
                elif kind == "r" and phase == "test" and msg.get("i") == cur:
                    out, err = msg.get("out"), msg.get("err")
                    ok = isinstance(out, str)
                    results[cur] = {"status": "RAN" if ok else "ERROR", "seconds": now - mark,
                                    "out": out if ok else None,
                                    "detail": "" if ok else str(err)[:300]}
                    cur, mark = cur + 1, now
                    if cur < n:
                        limit_end = min(now + tests[cur]["limit_s"], deadline)
                    else:  # all answered; wait briefly for the captured output
                        phase, limit_end = "done", now + req["load_limit_s"]
                elif phase == "done":
                    if kind == "end":
                        cap = req["limits"]["max_output_bytes"] + 64
                        resp["output"] = str(msg.get("output", ""))[:cap]
                    break
                else:
                    ended = (kind, msg)
                    break
            why = _kill_group(pid, _KILL_GRACE_S if ended and ended[0] == "timeout" else 0)
        finally:
            os.close(rfd)
            shutil.rmtree(workdir, ignore_errors=True)
        if ended is None:
            break
        kind, msg = ended
        detail = str((msg or {}).get("detail", ""))[:300]
        if phase == "load":
            status = {"missing": "MISSING_FUNCTION", "timeout": "TIMEOUT"}.get(kind, "CRASH")
            if kind == "crash" or kind == "missing":
                resp["output"] = str(msg.get("output", ""))[:req["limits"]["max_output_bytes"] + 64]
            resp["status"] = status
            resp["detail"] = detail or {"timeout": "module load timed out",
                                        "missing": f"{req['function']} not defined",
                                        "eof": f"process {why} while loading"}.get(kind, kind)
            if kind == "setup":
                resp["status"], resp["detail"] = "SETUP", detail
            for i in range(cur, n):
                results[i] = {"status": "TIMEOUT" if status == "TIMEOUT" else "ERROR",
                              "seconds": 0.0, "out": None, "detail": resp["detail"]}
            break
        if kind == "timeout":
            results[cur] = {"status": "TIMEOUT", "seconds": time.monotonic() - mark, "out": None,
                            "detail": "test time limit"}
        else:
            results[cur] = {"status": "ERROR", "seconds": time.monotonic() - mark, "out": None,
                            "detail": detail or f"process {why}"}
        start = cur + 1
    for i in range(n):
        if results[i] is None:
            results[i] = {"status": "TIMEOUT", "seconds": 0.0, "out": None,
                          "detail": "candidate time limit"}
            resp["status"], resp["detail"] = "TIMEOUT", "candidate time limit"
    resp["tests"] = results
    resp["seconds"] = time.monotonic() - t0
    return resp


def _isolate_network() -> str:
    """Put this server (and so every candidate) in an empty network namespace if allowed."""
    if _LIBC.unshare(_CLONE_NEWNET) == 0:
        return "netns"
    return "socket-guard"  # unprivileged: only the audit guard blocks sockets


def serve(inp, out) -> None:
    """Answer requests until stdin closes (one line in, one line out)."""
    root = tempfile.mkdtemp(prefix="coral-sandbox-")
    try:
        out.write(json.dumps({"ready": True, "network": _isolate_network(), "pid": os.getpid(),
                              "root": root}) + "\n")
        out.flush()
        for line in inp:
            req = json.loads(line)
            out.write(json.dumps(supervise(req, root), separators=(",", ":")) + "\n")
            out.flush()
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the judge stops us by closing stdin
    serve(sys.stdin, sys.stdout)
