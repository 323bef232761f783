"""The judge's handle on one fork server: start it inside its boundary, talk to it, kill it.

Everything that comes back from the server is treated as hostile, since candidates run next
to it: every read has a deadline (on expiry the server is killed), a response is at most
`MAX_FRAME_BYTES`, must carry the id of its request, and must match the response schema
exactly (`valid_response`); anything else makes the judge kill the server and start another.
A server's work dir goes with it: a tmpfs inside its mount namespace under the kernel
boundary, host temp dirs (work dir, copies of its code; removed by `kill`/`close`) under the
guard.
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
from coral.judge.child import MAX_RESPONSE_CHARS

MAX_FRAME_BYTES = MAX_RESPONSE_CHARS + (1 << 20)
START_TIMEOUT_S = 30.0
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

    def __init__(self, isolation: Isolation, work_dir_mb: int) -> None:
        kernel = isolation.kind == "kernel"
        self.root = SANDBOX_TMP if kernel else tempfile.mkdtemp(prefix="coral-sandbox-")
        self._host_dirs = [] if kernel else [self.root]
        lib = ""
        if not kernel:
            lib = stage_child_files(tempfile.mkdtemp(prefix="coral-sandbox-lib-"))
            self._host_dirs.append(lib)
        self._buf = b""
        self.proc = subprocess.Popen(
            server_argv(isolation, work_dir_mb, lib), stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")}, cwd="/",
            start_new_session=True)
        setup = {"root": self.root, "seccomp": isolation.seccomp.hex()}
        hello = None
        if self._send(setup):
            hello = self._read(time.monotonic() + START_TIMEOUT_S)
        if not (type(hello) is dict and hello.get("ready") is True):
            self.kill()
            raise SandboxError(f"fork server failed to start (exit {self.proc.returncode})")
        self.info = hello

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
        """Kill the server's whole session (bwrap and everything inside) and reap it."""
        if self.proc.poll() is None:  # once reaped, its pid may belong to someone else
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            self.proc.kill()
        self.proc.wait()
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
