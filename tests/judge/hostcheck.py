"""What the adversarial tests look at on the host: processes in the sandboxes' PID namespaces
(running or stopped), host threads and shared memory while a candidate runs (`Watch`), the
sandboxes' work dirs, the Python installation's files, a UNIX listener under host /tmp."""

from __future__ import annotations

import os
import socket
import sys
import sysconfig
import tempfile
import threading
import time
from pathlib import Path


def _parents() -> dict[int, int]:
    """pid -> parent pid of every host process."""
    parent = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                parent[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    return parent


def descendants(roots: set[int]) -> set[int]:
    """`roots` and every process below them."""
    parent = _parents()
    found, grew = set(roots), True
    while grew:
        new = {p for p, pp in parent.items() if pp in found and p not in found}
        found |= new
        grew = bool(new)
    return found


def pid_namespaces(judge) -> set[str]:
    """PID namespaces of the judge's live fork servers (every candidate lives in one)."""
    own = os.readlink("/proc/self/ns/pid")
    found = set()
    for pid in descendants({s.proc.pid for s in judge._all_servers}):
        try:
            ns = os.readlink(f"/proc/{pid}/ns/pid")
        except OSError:
            continue
        if ns != own:
            found.add(ns)
    return found


def processes_in(namespaces: set[str]) -> list[int]:
    """Live host processes inside any of `namespaces` — including ones in new sessions and
    stopped ones; zombies (dead, waiting to be reaped by whoever inherited them) excluded."""
    left = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if (os.readlink(f"/proc/{entry}/ns/pid") in namespaces
                        and _state_and_threads(int(entry))[0] not in ("Z", "X", "")):
                    left.append(int(entry))
            except OSError:
                continue
    return left


def python_dirs() -> list[Path]:
    """Directories of this Python installation a persistent hook could be written into."""
    paths = sysconfig.get_paths()
    dirs = {paths[k] for k in ("stdlib", "purelib", "platlib") if k in paths}
    base = sysconfig.get_paths(vars={"base": sys.base_prefix, "platbase": sys.base_prefix})
    dirs.update(base[k] for k in ("stdlib", "purelib") if k in base)
    return sorted(Path(d) for d in dirs if os.path.isdir(d))


def snapshot(dirs: list[Path]) -> dict[str, tuple]:
    """Names and mtimes of the top level of `dirs` (a write shows up here)."""
    return {str(d): tuple(sorted((e.name, e.stat(follow_symlinks=False).st_mtime_ns)
                                 for e in os.scandir(d))) for d in dirs}


class Listener:
    """A UNIX socket listening under host /tmp (where Ray's own sockets live)."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="coral-adv-", dir="/tmp")
        self.path = os.path.join(self.dir, "listener.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.path)
        self.sock.listen(8)
        self.sock.setblocking(False)

    def connections(self) -> int:
        """How many connections reached it."""
        count = 0
        while True:
            try:
                conn, _ = self.sock.accept()
            except BlockingIOError:
                return count
            conn.close()
            count += 1

    def close(self) -> None:
        self.sock.close()
        os.unlink(self.path)
        os.rmdir(self.dir)


def _state_and_threads(pid: int) -> tuple[str, int]:
    """(state letter, thread count) of a host process, ("", 0) if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return fields[0], int(fields[17])
    except (OSError, ValueError, IndexError):
        return "", 0


def host_threads() -> int:
    """Every thread on the host (the scheduling entities of /proc/loadavg)."""
    return int(Path("/proc/loadavg").read_text().split()[3].split("/")[1])


def host_shmem_kib() -> int:
    """Host shared memory (tmpfs pages included), KiB."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("Shmem:"):
            return int(line.split()[1])
    return 0


def server_pids(judge) -> set[int]:
    """The outer bwrap (or guard-mode server) of each of the judge's servers."""
    return {s.proc.pid for s in judge._all_servers}


def sandbox_processes(judge) -> dict[int, tuple[str, int]]:
    """pid -> (state, threads) of every process of the judge's servers, bwrap included."""
    return processes_below(server_pids(judge))


def processes_below(roots: set[int]) -> dict[int, tuple[str, int]]:
    """pid -> (state, threads) of `roots` and every live process below them."""
    out = {p: _state_and_threads(p) for p in descendants(roots)}
    return {p: st for p, st in out.items() if st[0] not in ("Z", "X", "")}


def stopped(processes: dict[int, tuple[str, int]]) -> list[int]:
    """Processes in the stopped (T) or traced-stopped (t) state."""
    return [p for p, (state, _) in processes.items() if state in ("T", "t")]


def work_dir_used_kib(judge) -> int:
    """Bytes used in the servers' tmpfs work dirs, seen from the host through /proc."""
    used = 0
    for server in judge._all_servers:
        for pid in descendants({server.proc.pid}) - {server.proc.pid}:
            try:
                st = os.statvfs(f"/proc/{pid}/root/tmp")
            except OSError:
                continue
            used += (st.f_blocks - st.f_bfree) * st.f_frsize // 1024
            break
    return used


class Watch:
    """Host-side view while a candidate runs: peak host threads, peak threads below `roots()`
    (the judge's servers, or a `coral judge` process), stopped processes seen there, host Shmem
    before and after."""

    def __init__(self, roots) -> None:
        self.roots, self.running = roots, False
        self.peak_host = self.peak_sandbox = 0
        self.stopped_seen: set[int] = set()

    def __enter__(self) -> "Watch":
        self.host_before, self.shmem_before = host_threads(), host_shmem_kib()
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self) -> None:
        while self.running:
            procs = processes_below(self.roots())
            self.peak_sandbox = max(self.peak_sandbox, sum(t for _, t in procs.values()))
            self.peak_host = max(self.peak_host, host_threads())
            self.stopped_seen.update(stopped(procs))
            time.sleep(0.005)

    def __exit__(self, *exc) -> None:
        self.running = False
        self.thread.join()
        self.shmem_after = host_shmem_kib()
