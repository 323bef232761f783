"""Which isolation the judge uses, and the command line that starts a fork server inside it.

`kernel`: the fork server runs under bubblewrap (one `bwrap` per server) in new user, PID,
mount, IPC, UTS, network and cgroup namespaces, as uid/gid 65534 with no capabilities and
no_new_privs, exiting when the judge closes its stdin, every level dying with its parent
(`--die-with-parent`; the judge starts servers from one long-lived thread, since the death
signal follows the thread that forked), reporting its namespace init's pid (`--info-fd`) so
that a kill reaches the whole PID namespace, and, where the host has a pids cgroup
(coral.judge.cgroup), inside its own cgroup with a pids.max. It sees only: /usr (system
libraries) and the Python installation, read-only; the seven files of the coral package
the server imports (read-only, under /sandbox/lib); a minimal read-only /dev; a size-limited
tmpfs /tmp. No dataset, no project checkout, no host /tmp, no /proc, no /etc. Each candidate
process it forks also loads the seccomp filter of `coral.judge.seccomp` (compiled here, on
the host, by libseccomp).

`guard`: the server is a plain child process and a candidate is confined by the in-process
audit guard (coral.judge.guard), rlimits and its own session only; for machines without
bubblewrap (macOS), chosen explicitly, with a warning.

`sandbox.isolation` picks: auto (kernel if this machine has it, else guard with a warning),
strict (kernel or an error saying what is missing and how to install it), guard.
$CORAL_SANDBOX_ISOLATION=strict upgrades auto to strict (the test suite and CI set it).
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from coral.judge import cgroup
from coral.judge.seccomp import SeccompUnavailable, candidate_filter

log = logging.getLogger(__name__)

ENV_OVERRIDE = "CORAL_SANDBOX_ISOLATION"
SANDBOX_LIB = "/sandbox/lib"
SANDBOX_TMP = "/tmp"
SANDBOX_UID = 65534
# What the fork server imports: nothing else of the project is visible inside.
CHILD_FILES = ("coral/__init__.py", "coral/judge/__init__.py", "coral/judge/child.py",
               "coral/judge/candidate.py", "coral/judge/codec.py", "coral/judge/guard.py",
               "coral/judge/hygiene.py")
_PROJECT_ROOT = Path(__file__).resolve().parents[2]
INSTALL_HINT = ("install bubblewrap (Debian/Ubuntu: apt-get install bubblewrap; Fedora: dnf "
                "install bubblewrap) and libseccomp (apt-get install libseccomp2) with "
                "`pip install pyseccomp`, or run `make setup`; on macOS there is no such "
                "boundary: set sandbox.isolation: guard")


class IsolationUnavailable(RuntimeError):
    """`strict` isolation was asked for and this machine lacks part of the kernel boundary."""


@dataclass(frozen=True)
class Isolation:
    """The isolation chosen: kind ("kernel" | "guard"), the seccomp program, a description,
    and the directory of the servers' pids cgroups ("" when the host offers none: then the
    seccomp program refuses threads)."""

    kind: str
    seccomp: bytes = field(default=b"", repr=False)
    detail: str = ""
    cgroup_parent: str = ""


def interpreter() -> tuple[str, str]:
    """(real path of this Python's executable, its installation prefix)."""
    exe = os.path.realpath(sys.executable)
    return exe, os.path.realpath(sys.base_prefix)


def _system_binds() -> list[str]:
    """/usr read-only, and the merged-/usr symlinks (or directories) beside it."""
    args = ["--ro-bind", "/usr", "/usr"]
    for top in ("/lib", "/lib64", "/lib32", "/bin", "/sbin"):
        if os.path.islink(top):
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
    return args


def bwrap_argv(work_dir_mb: int, info_fd: int = -1) -> list[str]:
    """`bwrap ...` up to (not including) the command it runs; `info_fd`: where bwrap writes
    its JSON with the namespace init's "child-pid"."""
    exe, prefix = interpreter()
    args = [shutil.which("bwrap") or "bwrap",
            "--unshare-user", "--unshare-ipc", "--unshare-pid", "--unshare-net",
            "--unshare-uts", "--unshare-cgroup-try", "--disable-userns", "--die-with-parent",
            *(["--info-fd", str(info_fd)] if info_fd >= 0 else []),
            "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID), "--cap-drop", "ALL",
            "--new-session", "--clearenv", "--hostname", "sandbox",
            *_system_binds()]
    for path in dict.fromkeys((prefix, os.path.dirname(exe))):
        if not path.startswith("/usr/"):
            args += ["--ro-bind", path, path]
    for rel in CHILD_FILES:
        args += ["--ro-bind", str(_PROJECT_ROOT / rel), f"{SANDBOX_LIB}/{rel}"]
    args += ["--dev", "/dev", "--remount-ro", "/dev",
             "--size", str(work_dir_mb * 1024 * 1024), "--tmpfs", SANDBOX_TMP,
             "--remount-ro", "/", "--chdir", SANDBOX_TMP]
    return args


def stage_child_files(dest: str) -> str:
    """Copy the server's files to `dest` (guard mode: the project itself stays off sys.path)."""
    for rel in CHILD_FILES:
        target = Path(dest, rel)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(_PROJECT_ROOT / rel, target)
    return dest


def server_argv(isolation: Isolation, work_dir_mb: int, guard_lib: str = "",
                info_fd: int = -1) -> list[str]:
    """The fork server's command line: an isolated (-I), site-free (-S) interpreter.

    Under the guard, `guard_lib` holds copies of the server's files (`stage_child_files`).
    """
    exe, _ = interpreter()
    lib = SANDBOX_LIB if isolation.kind == "kernel" else guard_lib
    boot = f"import sys; sys.path.insert(0, {lib!r}); from coral.judge.child import main; main()"
    command = [exe, "-I", "-S", "-u", "-c", boot]
    return (bwrap_argv(work_dir_mb, info_fd) + ["--", *command]) if isolation.kind == "kernel" \
        else command


@functools.cache
def missing() -> tuple[str, ...]:
    """What this machine lacks for the kernel boundary (empty: it has everything)."""
    gaps = []
    if not sys.platform.startswith("linux"):
        return (f"a Linux kernel (this is {sys.platform})",)
    if shutil.which("bwrap") is None:
        gaps.append("bubblewrap (bwrap not on PATH)")
    try:
        candidate_filter()
    except SeccompUnavailable as exc:
        gaps.append(str(exc))
    if not gaps:
        probe = _probe_bwrap()
        if probe.returncode != 0:
            gaps.append(f"bwrap cannot create its namespaces here ({probe.stderr.strip()[:200]};"
                        " a container may need --privileged or user namespaces enabled)")
    return tuple(gaps)


PROBE_TRIES = 3


def _probe_bwrap() -> subprocess.CompletedProcess:
    """Start an empty interpreter under bwrap. A probe killed by a signal says nothing about
    namespaces (Ray kills a stopping worker's children first, and such a worker must not
    report "this machine lacks bubblewrap" as its last word): run it again, and raise
    RuntimeError, an infrastructure failure, if every try is killed."""
    argv = bwrap_argv(1) + ["--", interpreter()[0], "-I", "-S", "-c", ""]
    for _ in range(PROBE_TRIES):
        probe = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        if probe.returncode >= 0:
            return probe
    raise RuntimeError(f"the bwrap probe was killed by signal {-probe.returncode} "
                       f"{PROBE_TRIES} times; is this process being stopped?")


def choose(configured: str) -> Isolation:
    """The isolation for `sandbox.isolation` (see the module docstring); logs which."""
    wanted = configured
    if configured == "auto" and os.environ.get(ENV_OVERRIDE) == "strict":
        wanted = "strict"
    if wanted == "guard":
        log.warning("sandbox isolation: guard (in-process audit guard only, chosen by "
                    "sandbox.isolation: guard); candidates are NOT behind a kernel boundary")
        return Isolation("guard", detail="in-process audit guard only")
    gaps = missing()
    if not gaps:
        parent = cgroup.pids_parent() or ""
        tasks = (f"pids cgroup under {parent}" if parent else
                 "no writable pids cgroup here: candidates may not create threads")
        detail = ("bubblewrap namespaces + seccomp, uid 65534, read-only Python, tmpfs /tmp, "
                  + tasks)
        log.info("sandbox isolation: kernel (%s)", detail)
        return Isolation("kernel", candidate_filter(threads=bool(parent)), detail, parent)
    what = "; ".join(gaps)
    if wanted == "strict":
        raise IsolationUnavailable(f"sandbox.isolation is strict but this machine lacks: {what}."
                                   f" To fix: {INSTALL_HINT}")
    log.warning("sandbox isolation: guard (auto: the kernel boundary is unavailable: %s). "
                "Candidates are NOT behind a kernel boundary; to fix: %s", what, INSTALL_HINT)
    return Isolation("guard", detail=f"in-process audit guard only (missing: {what})")
