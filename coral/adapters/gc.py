"""Keeping the adapter store from filling the disk: what is there, who needs it, what can go.

Policy (`plan`, pure): adapters are removed least recently used first; `older_than_s` removes
every adapter unused for that long, `max_bytes` then removes more until the store fits. An
adapter referenced by a run that is not finished (it may still run or be resumed) is never
removed, nor one named in `keep` (the adapter just trained). `collect` applies a plan to a
store directory (`coral cache gc`, and `storage.max_gb` after each training).

Bookkeeping is per file, so concurrent runs never rewrite a shared index:
- last use: the mtime of ``<root>/<key>/last_used``, touched on every cache hit and training
  (`record_use`; two touches race harmlessly, both write "now"); an adapter never touched since
  it was written counts from its creation;
- runs: ``<root>/.runs/<hash of the run directory>.json`` names each run directory that used
  the store (`register_run`, at every start). A run's adapters are the keys in its checkpoint
  and its `adapter_ready` events (the generation in flight is only in the events); it is
  finished when its last start was followed by `run_ended`.
Removal renames the folder out of the way before deleting it (as the store does), so a reader
sees the whole adapter or none; a hit on a removed adapter is a miss and trains it again.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional, Sequence

from coral.adapters.store import META_FILE, DirectoryStore

USED_FILE = "last_used"
RUNS_DIR = ".runs"
STALE_TEMP_S = 24 * 3600.0   # `.tmp-*` / `.old-*` folders older than this are debris
GB = 1024 ** 3


def record_use(folder: str | os.PathLike) -> None:
    """Mark the adapter in `folder` as used now (a no-op when it is no longer in the store)."""
    path = Path(folder)
    try:
        fd = os.open(path / USED_FILE, os.O_WRONLY | os.O_CREAT, 0o644)
    except (FileNotFoundError, NotADirectoryError):
        return  # removed meanwhile: never recreate a folder of a removed adapter
    try:
        os.utime(fd)
    finally:
        os.close(fd)


def _run_file(root: Path, run_dir: Path) -> Path:
    """Registry file of one run directory."""
    digest = hashlib.sha256(str(run_dir).encode()).hexdigest()[:16]
    return root / RUNS_DIR / f"{digest}.json"


def register_run(root: str | os.PathLike, run_dir: str | os.PathLike) -> None:
    """Record that the run in `run_dir` uses the store at `root` (idempotent, atomic)."""
    run_dir = Path(run_dir).resolve()
    path = _run_file(Path(root), run_dir)
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".reg-", dir=path.parent)
    with os.fdopen(fd, "w") as fh:
        fh.write(json.dumps({"run_dir": str(run_dir)}) + "\n")
    os.replace(tmp, path)   # readers see the whole file or none


@dataclass(frozen=True)
class RunUse:
    """A run directory that used the store: the adapter keys it references, finished or not."""

    run_dir: Path
    keys: frozenset
    finished: bool

    @property
    def name(self) -> str:
        return self.run_dir.name


def _events_keys(events: Path) -> tuple[set, bool]:
    """Adapter keys of the `adapter_ready` events, and whether the last start has ended."""
    keys, finished = set(), False
    if not events.exists():
        return keys, finished
    with open(events, encoding="utf-8") as fh:
        for line in fh:
            if '"event":"adapter_ready"' in line and line.endswith("\n"):
                keys.add(json.loads(line)["key"])
            elif '"event":"run_started"' in line:
                finished = False
            elif '"event":"run_ended"' in line:
                finished = True
    return keys, finished


def run_uses(root: str | os.PathLike) -> list[RunUse]:
    """The registered runs whose directory still exists, with their keys."""
    out = []
    for entry in sorted((Path(root) / RUNS_DIR).glob("*.json")):
        try:
            run_dir = Path(json.loads(entry.read_text())["run_dir"])
        except (OSError, ValueError, KeyError):
            continue  # being written, or not ours
        if not run_dir.is_dir():
            continue
        keys, finished = _events_keys(run_dir / "events.jsonl")
        try:
            ck = json.loads((run_dir / "checkpoint.json").read_text())
            keys |= {g["key"] for g in ck.get("genomes", {}).values() if "key" in g}
        except (OSError, ValueError):
            pass
        out.append(RunUse(run_dir, frozenset(keys), finished))
    return out


@dataclass(frozen=True)
class AdapterInfo:
    """One stored adapter as `coral cache ls` shows it."""

    key: str
    genes: dict
    base_model: str
    size: int              # bytes on disk
    created: float         # unix seconds
    last_used: float       # unix seconds (= created when never used since)
    runs: tuple = ()       # names of the run directories referencing it
    protected: bool = False  # referenced by a run that is not finished

    def to_dict(self) -> dict:
        return {"key": self.key, "genes": self.genes, "base_model": self.base_model,
                "size": self.size, "created": self.created, "last_used": self.last_used,
                "runs": list(self.runs), "protected": self.protected}


def _size(folder: Path) -> int:
    """Bytes of the files in an adapter folder."""
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())


def inventory(root: str | os.PathLike, runs: Optional[Sequence[RunUse]] = None
              ) -> list[AdapterInfo]:
    """Every complete adapter in the store, least recently used first."""
    store = DirectoryStore(root)
    runs = run_uses(store.root) if runs is None else runs
    out = []
    for key in store.keys():
        folder = store.local_path(key)
        try:
            meta = store.meta(key)
            created = (folder / META_FILE).stat().st_mtime
            used = folder / USED_FILE
            last = used.stat().st_mtime if used.exists() else created
            size = _size(folder)
        except (OSError, ValueError):
            continue  # removed while we looked
        refs = [r for r in runs if key in r.keys]
        out.append(AdapterInfo(key, dict(meta.get("genes", {})), str(meta.get("base_model", "")),
                               size, created, last,
                               tuple(r.name for r in refs),
                               any(not r.finished for r in refs)))
    return sorted(out, key=lambda a: (a.last_used, a.key))


@dataclass(frozen=True)
class Plan:
    """What a collection removes and what the store holds before and after."""

    remove: tuple = ()
    total: int = 0                        # bytes before
    protected: tuple = field(default=())  # keys kept because a run needs them

    @property
    def after(self) -> int:
        return self.total - sum(a.size for a in self.remove)


def plan(adapters: Sequence[AdapterInfo], *, now: float, max_bytes: Optional[int] = None,
         older_than_s: Optional[float] = None, keep: Iterable[str] = ()) -> Plan:
    """Which adapters to remove: unused too long, then least recently used until it fits."""
    keep = set(keep)
    total = sum(a.size for a in adapters)
    movable = [a for a in sorted(adapters, key=lambda a: (a.last_used, a.key))
               if not a.protected and a.key not in keep]
    remove, left = [], total
    for a in movable:
        stale = older_than_s is not None and now - a.last_used > older_than_s
        too_big = max_bytes is not None and left > max_bytes
        if stale or too_big:
            remove.append(a)
            left -= a.size
    return Plan(tuple(remove), total, tuple(a.key for a in adapters if a.protected))


def collect(root: str | os.PathLike, *, max_gb: Optional[float] = None,
            older_than_days: Optional[float] = None, dry_run: bool = False,
            keep: Iterable[str] = (), now: Optional[float] = None) -> Plan:
    """Plan and (unless `dry_run`) remove; also clears stale temporary folders."""
    store = DirectoryStore(root)
    now = time.time() if now is None else now
    adapters = inventory(store.root)
    result = plan(adapters, now=now, keep=keep,
                  max_bytes=None if max_gb is None else int(max_gb * GB),
                  older_than_s=None if older_than_days is None else older_than_days * 86400)
    if dry_run:
        return result
    removed = []
    for a in result.remove:
        if _used_since(store.local_path(a.key) / USED_FILE, a.last_used):
            continue  # another run's hit since we looked: leave it
        store.remove(a.key)
        removed.append(a)
    _clear_debris(store.root, now)
    return Plan(tuple(removed), result.total, result.protected)


def _used_since(used: Path, last_used: float) -> bool:
    """Whether the adapter's use mark is newer than `last_used` (False once it is gone)."""
    try:
        return used.stat().st_mtime > last_used
    except FileNotFoundError:
        return False


def _clear_debris(root: Path, now: float) -> None:
    """Delete `.tmp-*` / `.old-*` folders left by killed writers (older than a day)."""
    for p in root.iterdir():
        if not p.name.startswith((".tmp-", ".old-")):
            continue
        try:
            stale = now - p.stat().st_mtime > STALE_TEMP_S
        except FileNotFoundError:
            continue  # a live writer's folder, finished and removed since the listing
        if stale:
            shutil.rmtree(p, ignore_errors=True)
