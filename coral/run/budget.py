"""What a run has spent, counted from its events, against `search.budget`.

Three measures, each summed over every driver process of the run (a resumed run keeps
counting where it stopped):
- samples: answers generated and judged for the search (`candidate_judged` events of the
  search phase; held-out and re-evaluation samples are not part of the search's budget).
  Counted from judged events, not generated ones, so a crash that regenerates a batch does
  not make two replicates of the same config spend different budgets.
- hours: driver wall-clock time, from each `run_started` to the last event of that process
  (the downtime between a kill and a resume is not counted).
- gpu_hours: hours x the GPUs the pools reserve (size x num_gpus of every pool): what a
  cluster bills, whether or not the GPUs are busy. Always 0 on CPU.

The engine checks at every generation boundary (after the checkpoint) and stops cleanly when
any limit is reached. Samples are also kept inside a generation (the engine hands the race
what is left, coral.search.racing.race), so a sample budget is met to within one sample per
train problem; hours may be passed by one generation. Wall time is the only
input here that comes from the clock: it decides where a run stops, never what it does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional

from coral.config.search import BudgetConfig
from coral.run.rundir import read_events

SEARCH_PHASE = "search"


@dataclass(frozen=True)
class Spent:
    """What a run has used so far."""

    samples: int
    hours: float
    gpu_hours: float


def reserved_gpus(cfg: Any) -> float:
    """GPUs the pools of a config reserve (sum of size x num_gpus)."""
    pools = (cfg.ray.training_pool, cfg.ray.generation_pool, cfg.ray.judge_pool)
    return float(sum(p.size * p.num_gpus for p in pools))


def spent(events: Iterable[dict], gpus: float = 0.0, now: Optional[float] = None) -> Spent:
    """Samples, hours and GPU hours recorded in a run's events (`now`: count a running driver
    up to this unix time)."""
    samples, seconds = 0, 0.0
    start = last = None
    for ev in events:
        if ev["event"] == "run_started":
            if start is not None:
                seconds += last - start
            start = ev["time"]
        elif ev["event"] == "candidate_judged" and ev.get("phase") == SEARCH_PHASE:
            samples += 1
        last = ev["time"]
    if start is not None:
        seconds += (max(now, last) if now is not None else last) - start
    hours = seconds / 3600.0
    return Spent(samples, hours, hours * gpus)


def exhausted(budget: BudgetConfig, used: Spent) -> Optional[str]:
    """Why the run must stop (which limit is reached), or None while all limits have room."""
    for name, limit, value in _measures(budget, used):
        if limit and value >= limit:
            return f"budget spent: {name} {_fmt(value)} of {_fmt(limit)}"
    return None


def standing(budget: BudgetConfig, used: Spent) -> dict:
    """Per measure: used, limit (None: no limit) and what is left (None: no limit)."""
    return {name: {"used": round(value, 4) if isinstance(value, float) else value,
                   "limit": limit or None,
                   "left": (max(0, limit - value) if isinstance(value, int)
                            else round(max(0.0, limit - value), 4)) if limit else None}
            for name, limit, value in _measures(budget, used)}


def standing_of(run_dir: str | Path, now: Optional[float] = None) -> Optional[dict]:
    """`standing` of a run directory (config snapshot + events); None without a snapshot."""
    from coral import config as cfgmod

    try:
        cfg = cfgmod.load(Path(run_dir) / "config.yaml")
    except cfgmod.ConfigError:
        return None
    used = spent(read_events(Path(run_dir)), reserved_gpus(cfg), now)
    return standing(cfg.search.budget, used)


def format_standing(doc: dict) -> str:
    """One line for `coral status`: used / limit (left) per measure."""
    parts = []
    for name, m in doc.items():
        if m["limit"] is None:
            parts.append(f"{name} {_fmt(m['used'])} (no limit)")
        else:
            parts.append(f"{name} {_fmt(m['used'])}/{_fmt(m['limit'])} ({_fmt(m['left'])} left)")
    return "budget   " + ", ".join(parts)


def _measures(budget: BudgetConfig, used: Spent) -> list[tuple[str, Any, Any]]:
    """(name, limit, value) of every measure."""
    return [("samples", budget.samples, used.samples),
            ("hours", budget.max_hours, used.hours),
            ("gpu_hours", budget.gpu_hours, used.gpu_hours)]


def _fmt(value: Any) -> str:
    """Integers as is, hours with two decimals."""
    return str(value) if isinstance(value, int) else f"{value:.2f}"
