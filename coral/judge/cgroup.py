"""A pids cgroup per fork server: a limit on tasks that binds, and a way to kill a sandbox whole.

RLIMIT_NPROC does not bind a uid that maps to root on the host (the kernel exempts root's
user), and the sandbox uid maps to whoever runs the judge — root on our machines. So where
the host offers a writable pids controller, each fork server runs in its own cgroup with
`pids.max` = the server's own tasks (outer bwrap, the namespace's init, supervisor, zygote) +
`sandbox.max_processes`: threads and processes of a candidate count, and the kernel refuses
the one too many. cgroup v2 (a `pids` in cgroup.controllers of our cgroup's subtree) and the
v1 `pids` hierarchy are both used; `pids_parent()` says which directory, or None. Without one,
coral.judge.boundary loads the seccomp filter that refuses threads altogether (the fallback
that still binds: one task per candidate).

The outer bwrap joins its cgroup before it runs (`ServerCgroup.wrap`: a shell writes "0", itself,
into cgroup.procs and execs bwrap; no Python runs between fork and exec, which a judge with
threads, such as a Ray actor, must avoid), so nothing of the sandbox starts outside it;
`kill()` SIGKILLs every task in it (cgroup.kill on v2, each pid of cgroup.procs until empty
on v1), stopped ones included, and
removes the directory.
"""

from __future__ import annotations

import functools
import os
import signal
import time
from itertools import count
from typing import Optional

SERVER_TASKS = 4  # outer bwrap, the PID namespace's init (bwrap), supervisor, zygote
_V1_ROOT = "/sys/fs/cgroup/pids"
_PREFIX = "coral-sandbox-"
_names = count()


def _own_paths() -> dict[str, str]:
    """{"v2": path of our cgroup in the unified hierarchy, "v1": in the pids hierarchy}."""
    paths = {}
    try:
        with open("/proc/self/cgroup") as fh:
            for line in fh:
                hid, controllers, path = line.rstrip("\n").split(":", 2)
                if hid == "0" and not controllers:
                    paths["v2"] = path
                elif "pids" in controllers.split(","):
                    paths["v1"] = path
    except OSError:
        pass
    return paths


def _v2_mount() -> Optional[str]:
    """Where the unified (v2) hierarchy is mounted, if it is."""
    try:
        with open("/proc/self/mountinfo") as fh:
            for line in fh:
                left, _, right = line.partition(" - ")
                if right.split(" ", 1)[0] == "cgroup2":
                    return left.split()[4]
    except OSError:
        pass
    return None


def _usable(parent: str) -> bool:
    """A child cgroup of `parent` can be made, has pids.max, and can be removed."""
    probe = os.path.join(parent, f"coral-probe-{os.getpid()}")
    try:
        os.mkdir(probe)
    except OSError:
        return False
    try:
        return os.path.exists(os.path.join(probe, "pids.max"))
    finally:
        try:
            os.rmdir(probe)
        except OSError:
            pass


@functools.cache
def pids_parent() -> Optional[str]:
    """The cgroup directory fork servers' cgroups are made in, or None (no pids controller
    we may write to: the seccomp fallback applies)."""
    own = _own_paths()
    mount = _v2_mount()
    candidates = []
    if mount and "v2" in own:
        candidates.append(os.path.normpath(mount + "/" + own["v2"]))
    if "v1" in own and os.path.isdir(_V1_ROOT):
        candidates.append(os.path.normpath(_V1_ROOT + "/" + own["v1"]))
    for parent in candidates:
        if os.access(parent, os.W_OK) and _usable(parent):
            sweep(parent)
            return parent
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def sweep(parent: str) -> list[str]:
    """Kill and remove the servers' cgroups left by judges that died (the pid in the name is
    gone); the ones removed."""
    removed = []
    try:
        names = os.listdir(parent)
    except OSError:
        return removed
    for name in names:
        head, _, rest = name.partition(f"{_PREFIX}")
        owner = rest.split("-", 1)[0]
        if head or not owner.isdigit() or _alive(int(owner)):
            continue
        group = ServerCgroup.existing(os.path.join(parent, name))
        if group.kill(wait_s=1.0):
            removed.append(name)
    return removed


class ServerCgroup:
    """The cgroup of one fork server: made with its pids.max, joined by the outer bwrap."""

    def __init__(self, parent: str, max_tasks: int) -> None:
        self.path = os.path.join(parent, f"{_PREFIX}{os.getpid()}-{next(_names)}")
        os.mkdir(self.path)
        with open(os.path.join(self.path, "pids.max"), "w") as fh:
            fh.write(str(max_tasks))
        self._procs = os.path.join(self.path, "cgroup.procs").encode()

    @classmethod
    def existing(cls, path: str) -> "ServerCgroup":
        """A handle on a cgroup made earlier (by a judge that is gone)."""
        group = cls.__new__(cls)
        group.path, group._procs = path, os.path.join(path, "cgroup.procs").encode()
        return group

    def wrap(self, argv: list[str]) -> list[str]:
        """`argv` run by a shell that first moves itself into this cgroup."""
        return ["/bin/sh", "-c", 'echo 0 > "$0" && exec "$@"', os.fsdecode(self._procs), *argv]

    def pids(self) -> list[int]:
        """Tasks' process ids in this cgroup (empty once it is gone)."""
        try:
            with open(self._procs) as fh:
                return [int(p) for p in fh.read().split()]
        except OSError:
            return []

    def kill(self, wait_s: float = 5.0) -> bool:
        """SIGKILL everything in it (stopped tasks die too) and remove it; False if it could
        not be emptied within `wait_s`."""
        kill_file = os.path.join(self.path, "cgroup.kill")
        deadline = time.monotonic() + wait_s
        while True:
            if os.path.exists(kill_file):
                try:
                    with open(kill_file, "w") as fh:
                        fh.write("1")
                except OSError:
                    pass
            for pid in self.pids():  # v1: one by one (pids.max bounds any race with forks)
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            try:
                os.rmdir(self.path)
                return True
            except FileNotFoundError:
                return True
            except OSError:
                if time.monotonic() > deadline:
                    return False
                time.sleep(0.01)
