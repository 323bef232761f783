"""What a run directory says: a summary (for `coral status`), PNG plots and report.md.

Everything is read back from the files the engine writes (events.jsonl, checkpoint.json,
pareto.json, best.json, heldout.json, live.json), so it works on a running, a killed and a
finished run alike. Plots use matplotlib's Agg backend (no display needed).
"""

from __future__ import annotations

import difflib
import logging
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Any, Optional

from coral.config import ConfigError
from coral.run.rundir import (CONFIG_FILE, LIVE_FILE, REPORT_FILE, RunDir, driver_seen,
                             read_json)

log = logging.getLogger(__name__)

OBJECTIVES = ("bugfix", "style", "security", "runtime", "syntax")


def run_summary(path: str | Path) -> dict:
    """Progress, best scores, cache use, per-stage throughput and failures of a run."""
    rd = RunDir(path)
    events = rd.events()
    ck = rd.load_checkpoint() or {}
    live = read_json(rd.path / LIVE_FILE)
    starts = [i for i, e in enumerate(events) if e["event"] == "run_started"]
    ended = bool(events) and events[-1]["event"] == "run_ended"
    # Wall time of the driver processes (a resumed run's downtime is not counted).
    wall = sum(_segment_wall(events, s, e) for s, e in zip(starts, starts[1:] + [len(events)]))
    adapters = [e for e in events if e["event"] == "adapter_ready"]
    outcomes = Counter(e["outcome"] for e in adapters)
    judged = [e for e in events if e["event"] == "candidate_judged"]
    generated = [e for e in events if e["event"] == "genome_generated"]
    trained_keys = Counter(e["key"] for e in adapters if e["outcome"] == "trained")
    history = ck.get("history", [])
    best = max(history, key=lambda h: h["best_display"]) if history else None
    try:
        config = rd.load_config()
        pools = {"adapter": config.ray.training_pool.size,
                 "generate": config.ray.generation_pool.size,
                 "judge": config.ray.judge_pool.size}
        generations = config.search.generations
    except (ConfigError, OSError):  # a summary of a half-written run dir still helps
        pools, generations = {"adapter": 1, "generate": 1, "judge": 1}, None
    # An adapter's seconds are its wait (queue + training), so overlapping waits are merged.
    busy = {"adapter": _union_seconds([(e["time"] - e["seconds"], e["time"]) for e in adapters
                                       if e["outcome"] == "trained"]),
            "generate": sum(e["seconds"] for e in generated),
            "judge": sum(e["seconds"] for e in judged)}
    alive, last_seen = driver_seen(live)
    running = not ended and alive
    if running and starts:  # the driver is still going: count up to now
        wall += time.time() - events[-1]["time"]
    return {
        "run_dir": str(rd.path),
        "state": "finished" if ended else ("running" if running else "interrupted"),
        "last_seen_seconds": None if ended or last_seen is None else round(last_seen, 1),
        "resume": None if ended or running else f"coral run {rd.path / CONFIG_FILE}",
        "generation": ck.get("generation", 0), "generations": generations,
        "restarts": max(0, len(starts) - 1), "wall_seconds": round(wall, 2),
        "best": best and {"generation": best["generation"], "genome": best["best_genome"],
                          "display": best["best_display"], "scores": best["best_scores"],
                          "fixed": best["best_fixed"]},
        "cache": {"lookups": len(adapters), "hits": outcomes.get("hit", 0),
                  "trained": outcomes.get("trained", 0), "joined": outcomes.get("joined", 0),
                  "hit_rate": (outcomes.get("hit", 0) / len(adapters)) if adapters else None,
                  "duplicate_trainings": sum(n - 1 for n in trained_keys.values())},
        "stages": {stage: {"tasks": n, "busy_seconds": round(busy[stage], 2),
                           "per_second": round(n / wall, 3) if wall else None,
                           "utilisation": round(busy[stage] / (wall * pools[stage]), 3)
                           if wall else None}
                   for stage, n in (("adapter", outcomes.get("trained", 0)),
                                    ("generate", sum(e["requests"] for e in generated)),
                                    ("judge", len(judged)))},
        "failures": dict(Counter(e["status"] for e in judged if e["status"] != "OK")),
        "candidates": len(judged),
        "queues": live if running and "queued" in live else None,
        "history": [{k: h[k] for k in ("generation", "best_display", "median_display",
                                       "cache_hit_rate", "seconds")} for h in history],
    }


def _union_seconds(intervals: list[tuple[float, float]]) -> float:
    """Total length covered by possibly overlapping intervals."""
    total, end = 0.0, float("-inf")
    for a, b in sorted(intervals):
        if b > end:
            total += b - max(a, end)
            end = b
    return total


def _segment_wall(events: list[dict], start: int, end: int) -> float:
    """Seconds between the first and last event of one driver process."""
    return events[end - 1]["time"] - events[start]["time"]


def _ago(seconds: float) -> str:
    """A duration for humans: 42 s, 7 min, 3.5 h, 2.0 days."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def format_summary(s: dict) -> str:
    """Readable text of `run_summary`."""
    state = s["state"]
    if state == "interrupted":
        seen = ("" if s.get("last_seen_seconds") is None
                else f" (last seen {_ago(s['last_seen_seconds'])} ago)")
        state = f"interrupted{seen} — `{s['resume']}` resumes it"
    lines = [f"run      {s['run_dir']} ({state}, {s['restarts']} restart(s))",
             f"progress generation {s['generation']}/{s['generations']}, "
             f"{s['candidates']} candidates judged, {s['wall_seconds']:.0f} s of driver time"]
    if s["best"]:
        b = s["best"]
        sc = "  ".join(f"{k} {b['scores'][k]:.3f}" for k in (*OBJECTIVES, "fixed"))
        lines.append(f"best     {b['genome']} (gen {b['generation']}): {sc}")
        lines.append(f"fixed    {', '.join(b['fixed']) or '-'}")
    c = s["cache"]
    rate = "-" if c["hit_rate"] is None else f"{c['hit_rate']:.0%}"
    lines.append(f"cache    {c['lookups']} lookups: {c['hits']} hits, {c['trained']} trained, "
                 f"{c['joined']} joined (hit rate {rate}; duplicate trainings "
                 f"{c['duplicate_trainings']})")
    for stage, st in s["stages"].items():
        util = "-" if st["utilisation"] is None else f"{st['utilisation']:.0%}"
        lines.append(f"{stage:<8} {st['tasks']} done, {st['busy_seconds']:.1f} s busy, "
                     f"pool utilisation {util}")
    fails = ", ".join(f"{k} {v}" for k, v in sorted(s["failures"].items())) or "none"
    lines.append(f"failures {fails}")
    if s["queues"]:
        q = s["queues"]
        lines.append(f"queues   {q['queued']} queued; in flight: " +
                     ", ".join(f"{k} {v}" for k, v in q["in_flight"].items()))
    for h in s["history"]:
        rate = "-" if h["cache_hit_rate"] is None else f"{h['cache_hit_rate']:.0%}"
        lines.append(f"  gen {h['generation']:>3}: best {h['best_display']:.3f}  median "
                     f"{h['median_display']:.3f}  cache hits {rate}  {h['seconds']:.0f} s")
    return "\n".join(lines)


# ------------------------------------------------------------------------ plots

def _plt():
    """matplotlib.pyplot on the Agg backend."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(plt, fig, out: Path) -> Path:
    """Lay out, write the PNG and free the figure."""
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_pareto(rd: RunDir, out: Path) -> Optional[Path]:
    """Bugfix vs each other objective: every evaluated genome, survivors, Pareto front."""
    ck, pareto = rd.load_checkpoint(), rd.read_json("pareto.json")
    if not ck or not pareto:
        return None
    plt = _plt()
    everyone = [g["scores"] for g in ck["genomes"].values()]
    pop = pareto["population"]
    fig, axes = plt.subplots(1, 4, figsize=(15, 4), sharey=True)
    for ax, obj in zip(axes, OBJECTIVES[1:]):
        ax.scatter([s[obj] for s in everyone], [s["bugfix"] for s in everyone], s=18,
                   c="#bbbbbb", label="all evaluated")
        ax.scatter([p["scores"][obj] for p in pop], [p["scores"]["bugfix"] for p in pop],
                   s=30, c="#1f77b4", label="final population")
        front = [p for p in pop if p["front"]]
        ax.scatter([p["scores"][obj] for p in front], [p["scores"]["bugfix"] for p in front],
                   s=60, facecolors="none", edgecolors="#d62728", linewidths=1.5,
                   label="Pareto front")
        ax.set_xlabel(obj)
        ax.set_xlim(-0.05, 1.05)
        ax.set_ylim(-0.05, 1.05)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("bugfix (fraction of tests passed)")
    axes[0].legend(loc="upper left", fontsize=8)
    fig.suptitle(f"{rd.path.name}: bugfix vs the other objectives")
    return _save(plt, fig, out)


def plot_fitness(rd: RunDir, out: Path, baseline: Optional[RunDir] = None) -> Optional[Path]:
    """Best and median display score per generation (and a baseline run's, dashed)."""
    ck = rd.load_checkpoint()
    if not ck or not ck["history"]:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    runs = [(rd, "-")] + ([(baseline, "--")] if baseline and baseline.load_checkpoint() else [])
    for run, style in runs:
        hist = run.load_checkpoint()["history"]
        gens = [h["generation"] for h in hist]
        ax.plot(gens, [h["best_display"] for h in hist], style, marker="o", c="#1f77b4",
                label=f"{run.path.name} best")
        ax.plot(gens, [h["median_display"] for h in hist], style, marker=".", c="#ff7f0e",
                label=f"{run.path.name} median")
    top = max(h["best_display"] for r, _ in runs for h in r.load_checkpoint()["history"])
    ax.set_ylim(-0.01, max(0.1, top * 1.15))  # from 0: a flat line near 0 must look flat
    ax.set_xlabel("generation")
    ax.set_ylabel("fitness: fraction of problems fixed\n(+ mean objective / 1000 as tie-break)")
    ax.set_xticks(sorted({h["generation"] for h in ck["history"]}))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("fitness per generation")
    return _save(plt, fig, out)


def plot_cache(rd: RunDir, out: Path) -> Optional[Path]:
    """Adapter cache hits / trainings / joins per generation (stacked bars)."""
    per: dict[int, Counter] = {}
    for e in rd.events():
        if e["event"] == "adapter_ready" and e.get("phase") == "search":
            per.setdefault(e["generation"], Counter())[e["outcome"]] += 1
    if not per:
        return None
    plt = _plt()
    gens = sorted(per)
    fig, ax = plt.subplots(figsize=(7, 4))
    bottom = [0] * len(gens)
    for outcome, color in (("hit", "#2ca02c"), ("joined", "#9467bd"), ("trained", "#d62728")):
        vals = [per[g].get(outcome, 0) for g in gens]
        ax.bar(gens, vals, bottom=bottom, color=color, label=outcome)
        bottom = [b + v for b, v in zip(bottom, vals)]
    for g, total in zip(gens, bottom):
        rate = per[g].get("hit", 0) / total if total else 0
        ax.text(g, total, f"{rate:.0%} hits", ha="center", va="bottom", fontsize=9)
    ax.set_xlabel("generation")
    ax.set_ylabel("adapter lookups")
    ax.set_xticks(gens)
    ax.set_ylim(0, max(bottom) * 1.2 + 0.5)
    ax.legend(fontsize=8)
    ax.set_title("adapter cache per generation")
    return _save(plt, fig, out)


# ------------------------------------------------------------------------ markdown

def _buggy_sources(rd: RunDir) -> dict[str, str]:
    """Buggy programs by name (from the run's QuixBugs), or {} when not reachable."""
    from coral.judge.quixbugs import DatasetError, load_problems
    try:
        cfg = rd.load_config()
        return {p.name: p.buggy_source for p in load_problems(cfg.dataset.quixbugs)}
    except (DatasetError, OSError) as exc:
        log.warning("no diffs in the report: %s", exc)
        return {}


def _fixes(rd: RunDir, genome_id: str, phase: str) -> dict[str, str]:
    """Candidate code of a genome's fully fixed problems, from the events."""
    out = {}
    for e in rd.events():
        if (e["event"] == "candidate_judged" and e["genome_id"] == genome_id
                and e["phase"] == phase and e["scores"]["fixed"] >= 1.0):
            out[e["problem"]] = e.get("code", "")
    return out


def _diff(buggy: str, fixed: str, name: str) -> str:
    """Unified diff of the buggy program vs the candidate fix."""
    return "".join(difflib.unified_diff(buggy.splitlines(True), fixed.rstrip("\n").splitlines(True)
                                        + ["\n"], f"buggy/{name}.py", f"fixed/{name}.py"))


def _fmt_scores(s: dict) -> str:
    """One markdown table row of objectives."""
    return " | ".join(f"{s[k]:.3f}" for k in (*OBJECTIVES, "fixed"))


def write_report(path: str | Path, baseline: Optional[str | Path] = None) -> Path:
    """Write the plots and report.md into the run directory; return report.md's path."""
    rd = RunDir(path)
    if baseline is None:  # a sibling `<name>-random` run is the default baseline
        sibling = rd.path.parent / f"{rd.path.name}-random"
        baseline = sibling if (sibling / "checkpoint.json").exists() else None
    base = RunDir(baseline) if baseline else None
    pngs = [p for p in (plot_pareto(rd, rd.path / "pareto.png"),
                        plot_fitness(rd, rd.path / "fitness.png", base),
                        plot_cache(rd, rd.path / "cache.png")) if p]
    s = run_summary(rd.path)
    best = rd.read_json("best.json")
    md = [f"# CORAL run `{rd.path.name}`", "", "```", format_summary(s), "```", ""]
    md += [f"![{p.stem}]({p.name})" for p in pngs] + [""]
    header = "| | " + " | ".join((*OBJECTIVES, "fixed")) + " |"
    rule = "|---" * (len(OBJECTIVES) + 2) + "|"
    if best:
        md += [f"## Best genome `{best['id']}` (generation {best['generation']})", "",
               f"- heavy genes: `{best['genome']['heavy']}`", f"- knobs: `{best['knobs']}`",
               f"- adapter key: `{best['key'][:16]}...`", "", header, rule,
               f"| search | {_fmt_scores(best['scores'])} |"]
        held = rd.read_json("heldout.json")
        for g in (held or {}).get("genomes", []):
            if g["id"] == best["id"]:
                md.append(f"| held-out | {_fmt_scores(g['scores'])} |")
        md.append("")
        sources = _buggy_sources(rd)
        fixes = _fixes(rd, best["id"], "search")
        md += [f"### Problems fixed by the best genome ({len(fixes)})", ""]
        for name, code in sorted(fixes.items()):
            md += [f"#### {name}", "", "```diff",
                   _diff(sources.get(name, ""), code, name).rstrip("\n"), "```", ""]
        if not fixes:
            md += ["None: no candidate of the best genome passed all tests.", ""]
    held = rd.read_json("heldout.json")
    if held:
        md += ["## Held-out problems (never used for selection)", "",
               f"Problems: {', '.join(held['problems'])}", "", header, rule]
        md += [f"| `{g['id']}` | {_fmt_scores(g['scores'])} |" for g in held["genomes"]]
        md.append("")
    if base is not None:
        md += _comparison(rd, base)
    out = rd.path / REPORT_FILE
    out.write_text("\n".join(md) + "\n")
    return out


def _comparison(rd: RunDir, base: RunDir) -> list[str]:
    """Evolved vs baseline at the same evaluation budget."""
    rows = []
    for run in (rd, base):
        ck = run.load_checkpoint() or {"genomes": {}, "history": []}
        evaluated = len(ck["genomes"])
        best = run.read_json("best.json") or {}
        held = (run.read_json("heldout.json") or {}).get("genomes", [])
        cfg = run.load_config()
        med = statistics.median([g["display"] for g in ck["genomes"].values()] or [0.0])
        rows.append(f"| `{run.path.name}` | {cfg.search.strategy} | {evaluated} | "
                    f"{best.get('display', 0):.3f} | {med:.3f} | "
                    f"{len(best.get('fixed', []))} | "
                    f"{(held[0]['display'] if held else float('nan')):.3f} |")
    return ["## Evolved vs baseline (same evaluation budget)", "",
            "| run | strategy | genomes evaluated | best fitness | median fitness | "
            "problems fixed by best | best held-out fitness |",
            "|---|---|---|---|---|---|---|", *rows, ""]


def report_inputs(path: str | Path) -> dict[str, Any]:
    """The files a report reads (for error messages: which are missing)."""
    rd = RunDir(path)
    return {name: (rd.path / name).exists()
            for name in ("events.jsonl", "checkpoint.json", "pareto.json", "best.json")}
