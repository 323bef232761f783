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


class SeccompUnavailable(RuntimeError):
    """pyseccomp or libseccomp.so.2 is missing: the kernel boundary cannot be built."""


def compile_filter() -> bytes:
    """The candidate filter as raw BPF (struct sock_filter[]) for this machine."""
    try:
        import pyseccomp as sc
    except (ImportError, OSError, TypeError) as exc:  # TypeError: libseccomp.so.2 not found
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
    filt.add_rule(refuse, "clone", sc.Arg(0, sc.MASKED_EQ, _CLONE_THREAD, 0))
    filt.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
    # kill(0, sig) reaches only the candidate's own process group (its own session).
    filt.add_rule(refuse, "kill", sc.Arg(0, sc.NE, 0))
    with tempfile.TemporaryFile() as out:
        filt.export_bpf(out)
        out.seek(0)
        program = out.read()
    if not program or len(program) % 8:
        raise SeccompUnavailable("libseccomp exported an empty or malformed BPF program")
    return program


@functools.cache
def candidate_filter() -> bytes:
    """`compile_filter()`, once per process."""
    return compile_filter()
