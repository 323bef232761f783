"""Between two candidates on one fork server: what the supervisor puts back and what it checks.

The work dir is emptied after each candidate process (`empty`) and its own metadata — extended
attributes, mode, times — put back as it was at start just before the next one starts
(`reset`), so nothing a candidate leaves there reaches the next. `fingerprint` is the
zygote's rlimits and scheduling and the supervisor's scheduling: a candidate that could change
them would reach every later candidate (the seccomp filter refuses it; the supervisor compares
after each request and asks to be replaced if anything changed).
"""

from __future__ import annotations

import os
import resource
import shutil

_RLIMITS = tuple(getattr(resource, n) for n in dir(resource) if n.startswith("RLIMIT_"))


def empty(root: str) -> bool:
    """Remove everything a candidate left in the work dir; False if something resisted."""
    def force(func, path, _exc) -> None:
        os.chmod(os.path.dirname(path), 0o700)
        os.chmod(path, 0o700)
        func(path)
    try:
        for entry in os.scandir(root):
            if entry.is_dir(follow_symlinks=False):
                os.chmod(entry.path, 0o700)
                shutil.rmtree(entry.path, onerror=force)
            else:
                os.unlink(entry.path)
        return True
    except OSError:
        return False


def root_state(root: str) -> tuple:
    """The work dir's own metadata that a candidate could leave a message in."""
    st = os.stat(root)
    return st.st_mode & 0o7777, st.st_atime_ns, st.st_mtime_ns


def reset(root: str, state: tuple) -> None:
    """Put the (emptied) work dir's own metadata back as it was at start: no extended
    attributes, the same mode and times. Done just before each candidate process starts, so
    the change time it sees says only when it started."""
    try:
        names = os.listxattr(root) if hasattr(os, "listxattr") else []  # not on macOS
    except OSError:  # a file system without xattrs (guard mode on some hosts)
        names = []
    try:
        for name in names:
            os.removexattr(root, name)
        mode, atime, mtime = state
        os.chmod(root, mode)
        os.utime(root, ns=(atime, mtime))
    except OSError as exc:
        raise OSError(f"work dir cannot be reset: {exc}") from None


def _scheduling(pid: int) -> tuple:
    return (os.getpriority(os.PRIO_PROCESS, pid), os.sched_getscheduler(pid),
            os.sched_getparam(pid).sched_priority, tuple(sorted(os.sched_getaffinity(pid))))


def fingerprint(zygote: int) -> tuple:
    """The zygote's rlimits and scheduling, and this process's scheduling: a candidate that
    could change them would reach every later candidate (seccomp refuses it; this checks).
    The supervisor's own limits are left out: lowered, they make it fail, and a failed server
    is replaced anyway."""
    if not hasattr(resource, "prlimit"):  # macOS (guard mode): nothing to compare with
        return ()
    return (tuple(resource.prlimit(zygote, r) for r in _RLIMITS), _scheduling(zygote),
            _scheduling(os.getpid()))
