"""The judge's handle on one fork server: start it inside its boundary, talk to it, kill it.

Everything that comes back from the server is treated as hostile, since candidates run next
to it: every read has a deadline (on expiry the server is killed), a response is at most
`MAX_FRAME_BYTES`, must carry the id of its request, and must match the response schema
exactly (`valid_response`); anything else makes the judge kill the server and start another.
A server's work dir goes with it: a tmpfs inside its mount namespace under the kernel
boundary, host temp dirs (work dir, copies of its code; removed by `kill`/`close`) under the
guard.

A kill takes the whole sandbox, stopped processes included: the PID namespace's init (its pid
from bwrap's --info-fd, held as a pidfd) is SIGKILLed, which makes the kernel kill every
process in the namespace; then the outer bwrap's session; then, where there is one, every
task left in the server's pids cgroup (coral.judge.cgroup), which is removed.
"""

from __future__ import annotations

import json
import math
import os
import select
import shutil
import signal
import subprocess
import tempfile
import time
from typing import Optional

from coral.judge.boundary import SANDBOX_TMP, Isolation, server_argv, stage_child_files
from coral.judge.cgroup import SERVER_TASKS, ServerCgroup
from coral.judge.child import MAX_RESPONSE_CHARS

MAX_FRAME_BYTES = MAX_RESPONSE_CHARS + (1 << 20)
START_TIMEOUT_S = 30.0
KILL_WAIT_S = 5.0  # for the PID namespace to empty after its init is killed
_CANDIDATE_STATUSES = ("OK", "TIMEOUT", "CRASH", "MISSING_FUNCTION", "SETUP")
_TEST_STATUSES = ("RAN", "ERROR", "TIMEOUT")
_RESPONSE_KEYS = {"id", "status", "detail", "output", "tests", "recycle", "seconds"}
_TEST_KEYS = {"status", "seconds", "out", "detail"}


class SandboxError(RuntimeError):
    """The sandbox itself (not a candidate) failed: an infrastructure error."""


def _seconds(v) -> bool:
    return type(v) in (int, float) and math.isfinite(v) and v >= 0


def _valid_test(t) -> bool:
    """One raw test result: exact keys and types; an output only when it ran."""
    return (type(t) is dict and set(t) == _TEST_KEYS and t["status"] in _TEST_STATUSES
            and _seconds(t["seconds"]) and type(t["detail"]) is str
            and (type(t["out"]) is str if t["status"] == "RAN" else t["out"] is None))


def valid_response(resp, rid: str, n_tests: int) -> bool:
    """True when `resp` is exactly a response to request `rid` with `n_tests` results."""
    return (type(resp) is dict and set(resp) == _RESPONSE_KEYS and resp["id"] == rid
            and type(resp["status"]) is str and resp["status"] in _CANDIDATE_STATUSES
            and type(resp["detail"]) is str and type(resp["output"]) is str
            and type(resp["recycle"]) is bool and _seconds(resp["seconds"])
            and type(resp["tests"]) is list and len(resp["tests"]) == n_tests
            and all(_valid_test(t) for t in resp["tests"]))


class ForkServer:
    """One fork server (coral.judge.child) inside `isolation`, and its pipes."""

    def __init__(self, isolation: Isolation, work_dir_mb: int, max_processes: int = 64) -> None:
        kernel = isolation.kind == "kernel"
        self.root = SANDBOX_TMP if kernel else tempfile.mkdtemp(prefix="coral-sandbox-")
        self._host_dirs = [] if kernel else [self.root]
        lib = ""
        if not kernel:
            lib = stage_child_files(tempfile.mkdtemp(prefix="coral-sandbox-lib-"))
            self._host_dirs.append(lib)
        self._buf = b""
        self.init_pidfd = -1  # the PID namespace's init (kernel boundary)
        self.cgroup = (ServerCgroup(isolation.cgroup_parent, SERVER_TASKS + max_processes)
                       if kernel and isolation.cgroup_parent else None)
        info_r, info_w = os.pipe() if kernel else (-1, -1)
        argv = server_argv(isolation, work_dir_mb, lib, info_w)
        try:
            self.proc = subprocess.Popen(
                self.cgroup.wrap(argv) if self.cgroup else argv, stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
                cwd="/", start_new_session=True, pass_fds=(info_w,) if kernel else ())
        except BaseException:
            self._close_fds(info_r, info_w)
            if self.cgroup:
                self.cgroup.kill()
            raise
        self._close_fds(info_w)
        deadline = time.monotonic() + START_TIMEOUT_S
        if kernel:
            self.init_pidfd = self._init_pidfd(info_r, deadline)
        self._start(isolation, deadline)

    def _start(self, isolation: Isolation, deadline: float) -> None:
        """Send the set-up line and wait for the server's hello."""
        setup = {"root": self.root, "seccomp": isolation.seccomp.hex()}
        hello = None
        if (isolation.kind != "kernel" or self.init_pidfd >= 0) and self._send(setup):
            hello = self._read(deadline)
        if not (type(hello) is dict and hello.get("ready") is True):
            self.kill()
            raise SandboxError(f"fork server failed to start (exit {self.proc.returncode})")
        self.info = hello

    @staticmethod
    def _close_fds(*fds: int) -> None:
        for fd in fds:
            if fd >= 0:
                os.close(fd)

    @staticmethod
    def _init_pidfd(info_r: int, deadline: float) -> int:
        """A pidfd of the namespace's init, from bwrap's info JSON (-1 if it never came)."""
        data = b""
        try:
            while select.select([info_r], [], [], max(0.0, deadline - time.monotonic()))[0]:
                chunk = os.read(info_r, 4096)
                if not chunk or len(data) > 65536:
                    break
                data += chunk
        finally:
            os.close(info_r)
        try:
            pid = json.loads(data)["child-pid"]
            return os.pidfd_open(pid) if type(pid) is int and pid > 1 else -1
        except (ValueError, KeyError, TypeError, OSError):
            return -1

    @property
    def alive(self) -> bool:
        """The server process has not exited."""
        return self.proc.poll() is None

    def _send(self, msg: dict) -> bool:
        try:
            self.proc.stdin.write((json.dumps(msg, separators=(",", ":")) + "\n").encode())
            self.proc.stdin.flush()
            return True
        except (BrokenPipeError, OSError):
            return False

    def _read(self, deadline: float) -> Optional[object]:
        """Next JSON line, or None on deadline, end of stream, oversize or malformed."""
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
            chunk = os.read(fd, 1 << 20)
            if not chunk or len(self._buf) + len(chunk) > MAX_FRAME_BYTES:
                return None
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        try:
            return json.loads(line)
        except (ValueError, RecursionError):
            return None

    def request(self, req: dict, timeout_s: float) -> tuple[Optional[dict], str]:
        """(response, "") or (None, why) — "died", "timed out" or "malformed response"."""
        if not self._send(req):
            return None, "died"
        resp = self._read(time.monotonic() + timeout_s)
        if resp is None:
            return None, "died" if self.proc.poll() is not None else "timed out"
        if not valid_response(resp, req["id"], len(req["tests"])):
            return None, "malformed response"
        return resp, ""

    def kill(self) -> None:
        """Kill the whole sandbox (the namespace's init, the outer bwrap's session, the
        cgroup), stopped processes included, and reap it."""
        if self.init_pidfd >= 0:
            try:
                signal.pidfd_send_signal(self.init_pidfd, signal.SIGKILL)
                # the init exits once the kernel has killed everything in its namespace
                select.select([self.init_pidfd], [], [], KILL_WAIT_S)
            except OSError:  # already gone
                pass
            os.close(self.init_pidfd)
            self.init_pidfd = -1
        if self.proc.poll() is None:  # once reaped, its pid may belong to someone else
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            self.proc.kill()
        self.proc.wait()
        if self.cgroup is not None and self.cgroup.kill():
            self.cgroup = None
        self._cleanup()

    def close(self) -> None:
        """Stop the server (closing stdin ends its loop) and reap it; kill if it lingers."""
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            pass
        self.kill()

    def _cleanup(self) -> None:
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except OSError:
                pass
        for path in self._host_dirs:
            shutil.rmtree(path, ignore_errors=True)
