"""In-process guard of a candidate process: a PEP 578 audit hook installed before its code runs.

The hook cannot be removed once added, and CPython raises audit events from C for the
operations that matter here, so the candidate's own code cannot bypass it through Python:

- no new processes: os.fork/forkpty, os.system, os.exec*, os.posix_spawn, os.spawn*,
  subprocess.Popen, pty.spawn (this is what stops fork bombs when running as root, where
  RLIMIT_NPROC is not enforced);
- no signals to other processes: os.kill, os.killpg, signal.pthread_kill;
- no sockets (socket.* events), no ctypes (ctypes.* events), no raising rlimits;
- writes, deletes, renames, chmods only inside the candidate's temp dir; no links, no chdir;
- reads only from the Python installation (stdlib and site-packages, for imports) and the
  temp dir; so the QuixBugs data (expected answers), the project and /proc are unreadable;
- imports of ctypes/subprocess/socket/multiprocessing/pty modules are refused.

- relative paths are refused: the "open" event omits `dir_fd`, so a relative path cannot be
  checked against where the kernel will resolve it.

This is defence in depth, NOT a security boundary: its state (module globals, the stdlib
functions it calls, closure cells) is Python state the candidate can rebind, and ctypes or a
CPython memory-safety bug bypasses it (tests/judge/test_adversarial.py switches it off that
way). The boundary is the kernel's (coral.judge.boundary); `sandbox.isolation: guard` runs
with this guard alone and says so.
"""

from __future__ import annotations

import os
import sys
import sysconfig

_DENY_EVENTS = frozenset({
    "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty",
    "subprocess.Popen", "pty.spawn", "os.kill", "os.killpg", "signal.pthread_kill",
    "resource.setrlimit", "resource.prlimit", "os.chdir", "os.chroot", "os.link",
    "os.symlink", "os.startfile", "os.setxattr", "os.removexattr", "sys.remote_exec",
    "os.putenv", "os.unsetenv", "mmap.__new__", "winreg", "webbrowser.open", "fcntl.ioctl",
})
_DENY_PREFIXES = ("socket.", "ctypes.", "_ctypes.", "urllib.", "http.", "ftplib.", "smtplib.",
                  "telnetlib.", "imaplib.", "nntplib.", "poplib.")
_PATH_EVENTS = frozenset({"os.remove", "os.rmdir", "os.mkdir", "os.truncate", "os.chmod",
                          "os.chown", "os.utime", "shutil.rmtree", "os.rename", "shutil.move",
                          "shutil.copyfile", "shutil.copytree", "shutil.chown"})
_DENY_MODULES = frozenset({"ctypes", "_ctypes", "subprocess", "_posixsubprocess", "socket",
                           "_socket", "multiprocessing", "_multiprocessing", "pty", "ssl",
                           "_ssl", "asyncio", "concurrent", "mmap"})
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


class SandboxViolation(PermissionError):
    """An operation the sandbox forbids (raised into the candidate's code)."""


def _read_roots() -> tuple[str, ...]:
    """Directories a candidate may read: the Python installation, for imports."""
    paths = sysconfig.get_paths()
    roots = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    roots.update(paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths)
    return tuple(os.path.realpath(r) + os.sep for r in roots if r)


def _inside(path: str, roots: tuple[str, ...]) -> bool:
    """True when `path` resolves under one of `roots` (each ending in os.sep)."""
    real = os.path.realpath(path)
    return any((real + os.sep).startswith(r) for r in roots)


def install_guard(workdir: str, deny_read: tuple | list = ()) -> None:
    """Install the audit hook (irreversible) confining this process to `workdir`."""
    work = (os.path.realpath(workdir) + os.sep,)
    readable = _read_roots() + work + (os.devnull + os.sep, "/dev/urandom" + os.sep)
    denied = tuple(os.path.realpath(p) + os.sep for p in deny_read)
    fspath = os.fsdecode

    def refuse(event: str, detail: object = "") -> None:
        raise SandboxViolation(f"sandbox: {event} {detail}".strip()[:200])

    def hook(event: str, args: tuple) -> None:
        if event == "open":
            path, mode, flags = args
            if path is None or isinstance(path, int):
                return
            path = fspath(path)
            if not path.startswith("/"):  # relative to cwd, or to a dir_fd the event omits
                refuse("relative path", path)
            writing = any(c in (mode or "") for c in "wax+") or bool((flags or 0) & _WRITE_FLAGS)
            if writing and not _inside(path, work):
                refuse("write outside the sandbox", path)
            if not writing and (not _inside(path, readable) or _inside(path, denied)):
                refuse("read outside the sandbox", path)
        elif event == "import":
            if str(args[0]).split(".")[0] in _DENY_MODULES:
                refuse("import", args[0])
        elif event in _DENY_EVENTS or event.startswith(_DENY_PREFIXES):
            refuse(event)
        elif event in _PATH_EVENTS:
            for arg in args[:2]:
                if isinstance(arg, (str, bytes, os.PathLike)) and not _inside(fspath(arg), work):
                    refuse(event, arg)

    sys.addaudithook(hook)
