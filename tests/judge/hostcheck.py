"""What the adversarial tests look at on the host: processes in the sandboxes' PID namespaces,
the Python installation's files, a UNIX listener under host /tmp."""

from __future__ import annotations

import os
import socket
import sys
import sysconfig
import tempfile
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
    """Host processes inside any of `namespaces` — including ones in new sessions."""
    left = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.readlink(f"/proc/{entry}/ns/pid") in namespaces:
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
