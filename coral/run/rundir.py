"""The run directory `<run.runs_dir>/<run.name>/`: everything a run leaves behind.

- ``config.yaml``     the config snapshot (coral.config.to_dict), written at every start
- ``events.jsonl``    strict JSONL, one event per line, flushed after every line
- ``checkpoint.json`` written atomically after every generation (tmp + fsync + os.replace)
- ``pareto.json``, ``best.json``, ``heldout.json``, ``report.md``, ``*.png``

A SIGKILL can cut the last line of events.jsonl; `open_events` drops such a partial tail
before appending, so the file stays strict JSONL after a resume.
"""

from __future__ import annotations

import json
import os
import tempfile
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

# Fields that change what the search does: a checkpoint is only resumed when they agree.
# Excluded on purpose: where and how fast it runs (ray, storage, device, batch sizes,
# sandbox limits), the run name, and search.generations and search.budget (they decide only
# where a run stops, so a finished run can be extended).
SEARCH_RELEVANT = ("run.seed", "dataset", "search", "knobs", "model.base", "training",
                   "generation.greedy", "generation.max_prompt_tokens")
_NOT_RELEVANT = ("search.generations", "search.budget")


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

    def clear(self) -> None:
        """Remove the files of a previous run (for --no-resume); keeps the directory."""
        for name in (EVENTS_FILE, CHECKPOINT_FILE, PARETO_FILE, BEST_FILE, HELDOUT_FILE,
                     REPORT_FILE, "live.json"):
            (self.path / name).unlink(missing_ok=True)
        for png in self.path.glob("*.png"):
            png.unlink()
