"""No orphans: the processes of a private Ray go when the driver that started it goes.

`coral run` with `ray.address: null` starts its own Ray (GCS, raylet, dashboard and runtime-env
agents, workers) and, through the JudgePool, sandbox processes. On a normal exit `ray.shutdown`
stops most of them, but a driver killed with SIGKILL cannot, and some of Ray's agents ignore
SIGTERM. So before `ray.init`, `start_reaper` marks this process's environment with a token
(inherited by every process Ray and the sandboxes start) and spawns a small watcher,
``python -m cluster.reaper PID START TOKEN``, in its own session. When the driver process is
gone, however it ended, the watcher kills every process carrying the token (and any
descendant of one), SIGTERM first, SIGKILL for those still there a moment later, then exits.

Only processes with this run's token are touched: other runs and other users' Ray sessions on
the same machine have none or another. Linux only (/proc); elsewhere nothing is started.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Iterable, Optional

TOKEN_VAR = "CORAL_RAY_OWNER"   # in the environment of every process of a private Ray
POLL_S = 0.5                    # how often the watcher checks the driver
GRACE_S = 3.0                   # between SIGTERM and SIGKILL


def process_start(pid: int) -> Optional[str]:
    """Start time of a running process (clock ticks since boot); None when there is none or
    it has exited (a zombie waiting for its parent counts as exited)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] in ("Z", "X") else fields[19]


def _environ_has(pid: int, marker: bytes) -> bool:
    """Whether the process's initial environment contains `marker` (NAME=VALUE)."""
    try:
        return marker in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False


def _parents() -> dict[int, int]:
    """pid -> parent pid of every process now."""
    out = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                out[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    return out


def marked(token: str, exclude: Iterable[int] = ()) -> set[int]:
    """Pids of processes carrying `token`, plus all their descendants (a sandbox may drop
    its environment); `exclude` never."""
    marker = f"{TOKEN_VAR}={token}".encode()
    parents = _parents()
    found = {pid for pid in parents if _environ_has(pid, marker)}
    grown = True
    while grown:
        more = {pid for pid, ppid in parents.items() if ppid in found} - found
        found |= more
        grown = bool(more)
    return found - set(exclude) - {os.getpid()}


def _send(pids: Iterable[int], sig: int) -> None:
    """Signal each process that still exists."""
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def kill_marked(token: str, exclude: Iterable[int] = ()) -> int:
    """SIGTERM the token's processes, SIGKILL those left after GRACE_S; how many there were."""
    victims = marked(token, exclude)
    _send(victims, signal.SIGTERM)
    deadline = time.monotonic() + GRACE_S
    while time.monotonic() < deadline and marked(token, exclude):
        time.sleep(0.1)
    _send(marked(token, exclude), signal.SIGKILL)
    return len(victims)


def start_reaper() -> Optional[subprocess.Popen]:
    """Mark this process's environment and spawn the watcher; None where /proc is missing."""
    if not Path("/proc/self/stat").exists():
        return None
    token = uuid.uuid4().hex    # fresh: an inherited token belongs to another run's Ray
    me = os.getpid()
    env = {k: v for k, v in os.environ.items() if k != TOKEN_VAR}   # the watcher is not marked
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    proc = subprocess.Popen(
        [sys.executable, "-m", "cluster.reaper", str(me), str(process_start(me)), token],
        env=env, cwd=root, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True)   # survives a Ctrl-C of the driver
    os.environ[TOKEN_VAR] = token
    return proc


def watch(pid: int, start: str, token: str) -> int:
    """Wait for the process `pid` (started at `start`) to end, then reap its token."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while process_start(pid) == start:
        time.sleep(POLL_S)
    return kill_marked(token)


if __name__ == "__main__":
    watch(int(sys.argv[1]), sys.argv[2], sys.argv[3])
