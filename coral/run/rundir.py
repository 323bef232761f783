"""The run directory `<run.runs_dir>/<run.name>/`: everything a run leaves behind.

- ``config.yaml``     the config snapshot (coral.config.to_dict), written at every start
- ``events.jsonl``    strict JSONL, one event per line, flushed after every line
- ``checkpoint.json`` written atomically after every generation (tmp + fsync + os.replace)
- ``live.json``       while a driver runs: its queue depths plus the driver's heartbeat (pid,
                      host, boot id, time, refreshed every HEARTBEAT_S by a thread), so
                      `coral status` can tell a running run from an interrupted one
- ``pareto.json``, ``best.json``, ``heldout.json``, ``report.md``, ``*.png``

A SIGKILL can cut the last line of events.jsonl; `open_events` drops such a partial tail
before appending, so the file stays strict JSONL after a resume.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Iterator, Optional

import yaml

from coral import config as cfgmod

CONFIG_FILE = "config.yaml"
EVENTS_FILE = "events.jsonl"
CHECKPOINT_FILE = "checkpoint.json"
PARETO_FILE = "pareto.json"
BEST_FILE = "best.json"
HELDOUT_FILE = "heldout.json"
REPORT_FILE = "report.md"
LIVE_FILE = "live.json"

HEARTBEAT_S = 5.0   # how often a running driver refreshes its heartbeat in live.json
# A driver on another host cannot be checked by pid: no heartbeat for this long means gone.
STALE_S = 30.0

# Fields that change what the search does: a checkpoint is only resumed when they agree.
# Excluded on purpose: where and how fast it runs (ray, storage, device, batch sizes,
# sandbox limits), the run name, and search.generations and search.budget (they decide only
# where a run stops, so a finished run can be extended).
SEARCH_RELEVANT = ("run.seed", "dataset", "search", "knobs", "model.base", "training",
                   "generation.greedy", "generation.max_prompt_tokens")
# Limits, and the rule that picks among the final candidates: changing them and running a
# finished run again extends it or picks again, without redoing the search.
_NOT_RELEVANT = ("search.generations", "search.budget", "search.pick_confidence")


def run_path(cfg: cfgmod.Config) -> Path:
    """The run directory of a config: runs_dir/name."""
    return Path(cfg.run.runs_dir) / cfg.run.name


def atomic_write_text(path: Path, text: str) -> None:
    """Write a file so a reader (or a crash) sees the old or the new content, never a mix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; run files are meant to be shared/read
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    # fsync the directory so the rename itself survives a power cut.
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def atomic_write_json(path: Path, doc: Any) -> None:
    """Atomically write a JSON document (indented, keys in insertion order)."""
    atomic_write_text(path, json.dumps(doc, indent=1) + "\n")


def read_json(path: Path) -> Optional[Any]:
    """A JSON file's content, or None when it does not exist."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        return None


def _get(doc: dict, dotted: str) -> Any:
    """Value at a dotted path of a nested mapping."""
    for part in dotted.split("."):
        doc = doc[part]
    return doc


def relevant_fields(cfg: cfgmod.Config) -> dict:
    """The search-relevant part of a config as flat `dotted.key: value` pairs."""
    raw = cfgmod.to_dict(cfg)
    flat: dict = {}

    def walk(prefix: str, value: Any) -> None:
        if prefix in _NOT_RELEVANT:
            return
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}", v)
        else:
            flat[prefix] = value
    for key in SEARCH_RELEVANT:
        walk(key, _get(raw, key))
    return flat


def config_differences(old: dict, new: dict) -> list[str]:
    """Human lines `key: old -> new` for relevant fields that differ."""
    keys = sorted(set(old) | set(new))
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)]


class EventLog:
    """Append-only JSONL writer; every line is flushed to the OS before returning.

    Flushed lines survive a killed process (they are in the page cache); `sync` (called with
    each checkpoint) makes them durable against a machine crash too, without paying an
    fsync per event.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        _drop_partial_tail(self.path)
        self._fh = open(self.path, "a", encoding="utf-8")

    def write(self, kind: str, **fields: Any) -> dict:
        """Append one event `{"event": kind, "time": unix seconds, **fields}`."""
        doc = {"event": kind, "time": round(time.time(), 3), **fields}
        self._fh.write(json.dumps(doc, separators=(",", ":")) + "\n")
        self._fh.flush()
        return doc

    def sync(self) -> None:
        """fsync the events written so far."""
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        """Sync and close the file."""
        self.sync()
        self._fh.close()


def _drop_partial_tail(path: Path) -> None:
    """Truncate a last line that lacks its newline (a write cut by a kill)."""
    if not path.exists():
        return
    with open(path, "rb+") as fh:
        data = fh.read()
        if data and not data.endswith(b"\n"):
            fh.truncate(data.rfind(b"\n") + 1)


def read_events(path: Path) -> Iterator[dict]:
    """Events of a run directory's events.jsonl in order (a cut last line is skipped)."""
    path = Path(path)
    if path.is_dir():
        path = path / EVENTS_FILE
    if not path.exists():
        return
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if not line.endswith("\n"):
                break  # partial tail of a killed writer
            line = line.strip()
            if line:
                yield json.loads(line)


class RunDir:
    """One run's directory: config snapshot, events, checkpoint and result files."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._live_lock = threading.Lock()
        self._live: Optional[dict] = None    # last queue state the engine reported

    @property
    def events_path(self) -> Path:
        """Path of events.jsonl."""
        return self.path / EVENTS_FILE

    @property
    def checkpoint_path(self) -> Path:
        """Path of checkpoint.json."""
        return self.path / CHECKPOINT_FILE

    def create(self) -> "RunDir":
        """Make the directory (and parents)."""
        self.path.mkdir(parents=True, exist_ok=True)
        return self

    def write_config(self, cfg: cfgmod.Config) -> None:
        """Snapshot the config as YAML (loads back with coral.config.load)."""
        text = yaml.safe_dump(cfgmod.to_dict(cfg), sort_keys=False)
        atomic_write_text(self.path / CONFIG_FILE, text)

    def load_config(self) -> cfgmod.Config:
        """The snapshot config of this run."""
        return cfgmod.load(self.path / CONFIG_FILE)

    def open_events(self) -> EventLog:
        """An appending event log (a cut last line from a killed writer is removed first)."""
        return EventLog(self.events_path)

    def events(self) -> list[dict]:
        """All events so far."""
        return list(read_events(self.events_path))

    def save_checkpoint(self, doc: dict) -> None:
        """Atomically replace checkpoint.json."""
        atomic_write_json(self.checkpoint_path, doc)

    def load_checkpoint(self) -> Optional[dict]:
        """checkpoint.json, or None when the run has none yet."""
        return read_json(self.checkpoint_path)

    def write_json(self, name: str, doc: Any) -> Path:
        """Atomically write a result file (pareto.json, best.json, ...)."""
        path = self.path / name
        atomic_write_json(path, doc)
        return path

    def read_json(self, name: str) -> Optional[Any]:
        """A result file's content, or None."""
        return read_json(self.path / name)

    # ------------------------------------------------------------- live state
    def write_live(self, doc: dict) -> None:
        """Replace live.json with `doc` (queue depths) plus this driver's heartbeat."""
        with self._live_lock:
            self._live = dict(doc)
            self._write_live()

    def beat(self) -> None:
        """Refresh the heartbeat in live.json (no-op once `clear_live` ran)."""
        with self._live_lock:
            if self._live is not None:
                self._write_live()

    def clear_live(self) -> None:
        """Remove live.json (the run ended); later heartbeats write nothing."""
        with self._live_lock:
            self._live = None
            (self.path / LIVE_FILE).unlink(missing_ok=True)

    def _write_live(self) -> None:
        """Write live.json under the lock."""
        atomic_write_json(self.path / LIVE_FILE,
                          {**self._live, "heartbeat": time.time(), "driver": driver_identity()})

    def heartbeat(self, every_s: float = HEARTBEAT_S) -> "Heartbeat":
        """A started heartbeat thread for this run directory (stop it, or use `with`)."""
        return Heartbeat(self, every_s)

    def clear(self) -> None:
        """Remove the files of a previous run (for --no-resume); keeps the directory."""
        for name in (EVENTS_FILE, CHECKPOINT_FILE, PARETO_FILE, BEST_FILE, HELDOUT_FILE,
                     REPORT_FILE, LIVE_FILE):
            (self.path / name).unlink(missing_ok=True)
        for png in self.path.glob("*.png"):
            png.unlink()


class Heartbeat:
    """A daemon thread that refreshes the run's heartbeat every `every_s` seconds.

    A thread rather than the engine's loop: an in-process training or a long `wait` blocks
    the loop for minutes, and the heartbeat must say "alive" exactly while the process is.
    """

    def __init__(self, rundir: RunDir, every_s: float = HEARTBEAT_S) -> None:
        self.rundir = rundir
        self.every_s = every_s
        self._stop = threading.Event()
        rundir.write_live({})      # the driver is alive from now on, before the first queue
        self._thread = threading.Thread(target=self._loop, name="coral-heartbeat", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        """Beat until stopped."""
        while not self._stop.wait(self.every_s):
            self.rundir.beat()

    def stop(self) -> None:
        """Stop beating (live.json stays: a run that did not end was interrupted)."""
        self._stop.set()
        self._thread.join()

    def __enter__(self) -> "Heartbeat":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _boot_id() -> str:
    """This machine's boot id (pids are only comparable within one boot), or ''."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _process_start(pid: int) -> Optional[str]:
    """Start time of a process in clock ticks since boot (tells a reused pid apart), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]   # field 22; the name in (...) may hold spaces


def driver_identity() -> dict:
    """Who this driver is: host, boot id, pid and its start time."""
    pid = os.getpid()
    return {"host": socket.gethostname(), "boot": _boot_id(), "pid": pid,
            "start": _process_start(pid)}


def driver_seen(live: Optional[dict], now: Optional[float] = None) -> tuple[bool, Optional[float]]:
    """(is the driver that wrote `live` still running, seconds since its last heartbeat).

    On the driver's own machine the answer is exact: its pid still runs the same process.
    From elsewhere (a run directory on shared storage) a heartbeat older than STALE_S says
    the driver is gone.
    """
    if not live:
        return False, None
    beat = live.get("heartbeat", live.get("time"))
    age = None if beat is None else max(0.0, (now or time.time()) - float(beat))
    who = live.get("driver") or {}
    if who.get("host") == socket.gethostname() and who.get("boot") == _boot_id() and who.get("pid"):
        start = _process_start(int(who["pid"]))
        return start is not None and start == who.get("start"), age
    return age is not None and age < STALE_S, age
