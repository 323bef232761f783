"""The answer printed at the end of `coral run` (and into a Ray job's log): what the run found.

The `coral status` summary, then the best genome's fixed problems, its held-out result, the
random baseline at the same budget (a sibling run `<name>-random`, as the report uses) and
where the report is. Everything is read back from the run directory, so it is the same text
for a run that just finished here and for one that finished as a job.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from coral.config import ConfigError
from coral.run.report import format_summary, run_summary
from coral.run.rundir import BEST_FILE, HELDOUT_FILE, REPORT_FILE, RunDir


def _train_problems(rd: RunDir) -> list[str]:
    """Train problems of the run's latest start (from its run_started event)."""
    starts = [e for e in rd.events() if e["event"] == "run_started"]
    return list(starts[-1].get("train_problems", [])) if starts else []


def _listing(names: list[str]) -> str:
    """'a, b, c' or '-'."""
    return ", ".join(names) if names else "-"


def best_lines(rd: RunDir) -> list[str]:
    """The best genome: its fixes on the train problems and on the held-out problems."""
    best = rd.read_json(BEST_FILE)
    if not best:
        return ["best genome: none yet (no generation finished)"]
    train = _train_problems(rd)
    of = f" of {len(train)}" if train else ""
    lines = [f"best genome {best['id']} (generation {best['generation']}, fitness "
             f"{best['display']:.3f}): fixed {len(best['fixed'])}{of} train problems: "
             f"{_listing(best['fixed'])}"]
    held = rd.read_json(HELDOUT_FILE)
    mine = [g for g in (held or {}).get("genomes", []) if g["id"] == best["id"]]
    if mine:
        g = mine[0]
        lines.append(f"held-out: fixed {len(g['fixed'])} of {len(held['problems'])} "
                     f"(never used for selection; fitness {g['display']:.3f}): "
                     f"{_listing(g['fixed'])}")
        lines += untuned_lines(held)
    else:
        lines.append("held-out: not evaluated (run.held_out_eval off, no held-out problems, "
                     "or the run has not reached it)")
    return lines


def untuned_lines(held: dict) -> list[str]:
    """The untuned model at greedy decoding on the same held-out problems, and what the
    pick's adapter adds at the pick's knobs."""
    out = []
    base = held.get("untuned_greedy")
    if base:
        out.append(f"untuned model (no adapter, greedy decoding), same held-out problems: "
                   f"fixed {len(base['fixed'])} of {len(held['problems'])}: "
                   f"{_listing(base['fixed'])}")
    gain = held.get("adapter_gain")
    if gain and gain["has_adapter"]:
        out.append(f"adapter gain: held-out pass@k {gain['with_adapter']:.3f} with its adapter, "
                   f"{gain['without_adapter']:.3f} without at the same knobs "
                   f"({gain['gain']:+.3f})")
    elif gain:
        out.append("adapter gain: none to measure, the pick uses no adapter (the base model "
                   "as it is)")
    return out


def baseline_lines(rd: RunDir) -> list[str]:
    """The random baseline at the same budget, or how to get one."""
    try:
        strategy = rd.load_config().search.strategy
    except (ConfigError, OSError):
        strategy = None
    if strategy == "random":
        return ["baseline: this run is the random baseline"]
    sibling = RunDir(rd.path.parent / f"{rd.path.name}-random")
    best = sibling.read_json(BEST_FILE)
    if not best:
        return [f"baseline: none yet; `coral run CONFIG --set search.strategy=random "
                f"--set run.name={rd.path.name}-random` runs it, then `coral report "
                f"{rd.path}` compares"]
    held = (sibling.read_json(HELDOUT_FILE) or {}).get("genomes", [])
    top = [g for g in held if g["id"] == best["id"]]
    held_txt = (f", held-out fixed {len(top[0]['fixed'])} (fitness {top[0]['display']:.3f})"
                if top else "")
    return [f"baseline {sibling.path.name} (random search): best fixed {len(best['fixed'])} "
            f"train problems (fitness {best['display']:.3f}){held_txt}"]


def final_answer(path: str | Path, report: Optional[Path] = None) -> str:
    """The whole end-of-run text."""
    rd = RunDir(path)
    report = report or rd.path / REPORT_FILE
    parts = [format_summary(run_summary(rd.path)), "", *best_lines(rd), *baseline_lines(rd)]
    parts.append(f"run directory: {rd.path}")
    if report.exists():
        parts.append(f"report: {report}")
    return "\n".join(parts)
