"""The seccomp filter of a candidate process: compiled once on the host, loaded in each candidate.

libseccomp (through pyseccomp, ctypes over libseccomp.so.2) compiles the rules below into a
classic BPF program for this machine's architecture; the judge hands those bytes to its fork
server, and each candidate process loads them with one prctl() just before the candidate's
code runs (`coral.judge.candidate.load_seccomp`), so nothing of libseccomp is needed inside
the sandbox and loading costs microseconds.

The filter allows by default and refuses, with EPERM, what a candidate could use against the
host, the fork server or another candidate: new processes (fork, vfork, clone without
CLONE_THREAD, execve), signals to anything but its own process group, tracing and other
processes' memory, pidfds, device nodes and FIFOs, mounts and namespaces, sockets, BPF,
io_uring, keyrings, perf events, kernel modules, System V IPC and message queues (which
would outlive one candidate and reach the next). A syscall made with another architecture's
calling convention (e.g. int 0x80 on x86-64) kills the process (libseccomp's default).

A candidate names no process but itself: every call that takes a pid (or a process group or
user) and changes that process's limits, scheduling or I/O priority is refused unless the
target is 0, "myself" (`SELF_ONLY`); and so are the ways to make the kernel signal another
process on the candidate's behalf: fcntl F_SETOWN / F_SETOWN_EX / F_SETSIG, O_ASYNC through
F_SETFL, and their ioctl twins FIOASYNC / FIOSETOWN / SIOCSPGRP / TIOCSPGRP (a SIGIO owner
can be any process of the same uid: the supervisor, which a SIGSTOP would freeze). Command
numbers are compared on their low 32 bits, as the kernel reads them; pids must be exactly 0.

`threads=False` (no pids cgroup on this machine, coral.judge.cgroup) refuses clone altogether:
RLIMIT_NPROC does not bind a uid that maps to host root, so without pids.max the only limit on
threads that binds is none at all.
"""

from __future__ import annotations

import errno
import functools
import tempfile

# Refused outright (EPERM). Names unknown to this architecture are skipped.
DENIED_SYSCALLS = (
    "fork", "vfork", "execve", "execveat",
    "ptrace", "process_vm_readv", "process_vm_writev", "process_madvise", "kcmp",
    "pidfd_open", "pidfd_send_signal", "pidfd_getfd",
    "tkill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo",
    "mknod", "mknodat",
    "mount", "umount2", "pivot_root", "chroot", "move_mount", "open_tree", "fsopen",
    "fsmount", "fsconfig", "fspick", "mount_setattr",
    "unshare", "setns",
    "socket", "socketpair",
    "bpf", "io_uring_setup", "io_uring_enter", "io_uring_register",
    "keyctl", "add_key", "request_key", "perf_event_open", "userfaultfd",
    "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load",
    "open_by_handle_at", "name_to_handle_at", "move_pages", "migrate_pages",
    "personality", "acct", "swapon", "swapoff", "reboot", "syslog", "quotactl",
    # System V IPC and POSIX message queues outlive a process inside the sandbox's IPC
    # namespace: a channel from one candidate to the next.
    "shmget", "shmat", "shmctl", "msgget", "msgsnd", "msgrcv", "msgctl", "semget", "semop",
    "semtimedop", "semctl", "mq_open", "mq_unlink", "mq_timedsend", "mq_timedreceive",
    "mq_notify", "mq_getsetattr",
)
_CLONE_THREAD = 0x00010000
_LOW32 = 0xFFFFFFFF
# (syscall, index of its pid argument): refused unless that argument is exactly 0 (self).
SELF_ONLY = (("prlimit64", 0), ("sched_setscheduler", 0), ("sched_setparam", 0),
             ("sched_setattr", 0), ("sched_setaffinity", 0), ("setpgid", 0), ("setpgid", 1),
             # setpriority(which, who) / ioprio_set(which, who, prio): who 0 of PRIO_PROCESS
             # (0) / IOPRIO_WHO_PROCESS (1); a group or a user would reach the supervisor.
             ("setpriority", 1), ("ioprio_set", 1))
_SELF_KIND = (("setpriority", 0), ("ioprio_set", 1))  # (syscall, the only `which` allowed)
_F_SETFL, _O_ASYNC = 4, 0o20000
_FCNTL_OWNER = (8, 10, 15)  # F_SETOWN, F_SETSIG, F_SETOWN_EX
_IOCTL_OWNER = (0x5452, 0x8901, 0x8902, 0x5410)  # FIOASYNC, FIOSETOWN, SIOCSPGRP, TIOCSPGRP


class SeccompUnavailable(RuntimeError):
    """pyseccomp or libseccomp.so.2 is missing: the kernel boundary cannot be built."""


def _self_only(sc, filt, refuse) -> None:
    """The rules that keep a candidate's pid-taking and signal-owner calls on itself."""
    for name, index in SELF_ONLY:
        filt.add_rule(refuse, name, sc.Arg(index, sc.NE, 0))
    for name, which in _SELF_KIND:
        filt.add_rule(refuse, name, sc.Arg(0, sc.NE, which))
    for name in ("fcntl", "fcntl64"):
        try:
            for cmd in _FCNTL_OWNER:
                filt.add_rule(refuse, name, sc.Arg(1, sc.MASKED_EQ, _LOW32, cmd))
            filt.add_rule(refuse, name, sc.Arg(1, sc.MASKED_EQ, _LOW32, _F_SETFL),
                          sc.Arg(2, sc.MASKED_EQ, _O_ASYNC, _O_ASYNC))
        except (OSError, ValueError):  # fcntl64 exists on 32-bit ABIs only
            continue
    for cmd in _IOCTL_OWNER:
        filt.add_rule(refuse, "ioctl", sc.Arg(1, sc.MASKED_EQ, _LOW32, cmd))


def compile_filter(threads: bool = True) -> bytes:
    """The candidate filter as raw BPF (struct sock_filter[]) for this machine; with
    `threads=False` no clone at all (see the module docstring)."""
    try:
        import pyseccomp as sc
    # pyseccomp raises RuntimeError("Unable to find libseccomp") where libseccomp.so.2 is
    # missing (older releases TypeError): the same as a missing library
    except (ImportError, OSError, TypeError, RuntimeError) as exc:
        raise SeccompUnavailable(f"pyseccomp/libseccomp unavailable ({exc})") from None
    refuse = sc.ERRNO(errno.EPERM)
    filt = sc.SyscallFilter(sc.ALLOW)
    for name in DENIED_SYSCALLS:
        try:
            filt.add_rule(refuse, name)
        except (OSError, ValueError):  # not a syscall of this architecture
            continue
    # Threads may be created (clone with CLONE_THREAD), processes not. clone3's flags live in
    # memory a filter cannot read: ENOSYS makes glibc fall back to clone for threads.
    if threads:
        filt.add_rule(refuse, "clone", sc.Arg(0, sc.MASKED_EQ, _CLONE_THREAD, 0))
    else:
        filt.add_rule(refuse, "clone")
    filt.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
    # kill(0, sig) reaches only the candidate's own process group (its own session).
    filt.add_rule(refuse, "kill", sc.Arg(0, sc.NE, 0))
    _self_only(sc, filt, refuse)
    with tempfile.TemporaryFile() as out:
        filt.export_bpf(out)
        out.seek(0)
        program = out.read()
    if not program or len(program) % 8:
        raise SeccompUnavailable("libseccomp exported an empty or malformed BPF program")
    return program


@functools.cache
def candidate_filter(threads: bool = True) -> bytes:
    """`compile_filter(threads)`, once per process."""
    return compile_filter(threads)
