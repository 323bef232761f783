"""What a run directory says: a summary (for `coral status`) and report.md (with the PNG plots
of coral.run.plots).

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
from coral.objectives import NAMES, PRIMARY
from coral.run.plots import plot_cache, plot_fitness, plot_pareto
from coral.run.rundir import (CONFIG_FILE, LIVE_FILE, REPORT_FILE, RunDir, driver_seen,
                             read_json)

log = logging.getLogger(__name__)

OBJECTIVES = NAMES     # report columns: every objective of coral/objectives.py, table order


def run_summary(path: str | Path) -> dict:
    """Progress, best scores (pass@k), samples (UNCHANGED, tokens), cache use, per-stage
    throughput and failures of a run."""
    rd = RunDir(path)
    events = rd.events()
    ck = rd.load_checkpoint() or {}
    live = read_json(rd.path / LIVE_FILE)
    ended = bool(events) and events[-1]["event"] == "run_ended"
    alive, last_seen = driver_seen(live)
    running = not ended and alive
    wall = _wall_seconds(events, running)
    pools, generations = _pool_sizes(rd)
    judged = [e for e in events if e["event"] == "candidate_judged"]
    history = ck.get("history", [])
    return {
        "run_dir": str(rd.path),
        "state": "finished" if ended else ("running" if running else "interrupted"),
        "last_seen_seconds": None if ended or last_seen is None else round(last_seen, 1),
        "resume": None if ended or running else f"coral run {rd.path / CONFIG_FILE}",
        "generation": ck.get("generation", 0), "generations": generations,
        "restarts": max(0, sum(e["event"] == "run_started" for e in events) - 1),
        "wall_seconds": round(wall, 2),
        "best": _best(rd, history),
        "samples": _samples(judged),
        "cache": _cache(events),
        "stages": _stages(events, wall, pools),
        "failures": dict(Counter(e["status"] for e in judged if e["status"] != "OK")),
        "candidates": len(judged),
        "queues": live if running and "queued" in live else None,
        "history": [{k: h.get(k) for k in ("generation", "best_display", "median_display",
                                           "unchanged", "tokens_per_sample", "cache_hit_rate",
                                           "seconds", "samples_spent", "samples_per_problem")}
                    for h in history],
        "heldout": _heldout(rd),
    }


def _heldout(rd: RunDir) -> Optional[dict]:
    """The pick's held-out result beside the untuned greedy model's, and its adapter gain."""
    held = rd.read_json("heldout.json")
    if not held or not held.get("genomes"):
        return None
    pick, base = held["genomes"][0], held.get("untuned_greedy")
    return {"problems": len(held["problems"]), "pick": pick["id"],
            "pick_fixed": len(pick["fixed"]), "pick_pass_at_k": pick["scores"][PRIMARY],
            "untuned_greedy_fixed": len(base["fixed"]) if base else None,
            "untuned_greedy_pass_at_k": base["scores"][PRIMARY] if base else None,
            "adapter_gain": held.get("adapter_gain")}


def _wall_seconds(events: list[dict], running: bool) -> float:
    """Wall time of the driver processes (a resumed run's downtime is not counted)."""
    starts = [i for i, e in enumerate(events) if e["event"] == "run_started"]
    wall = sum(_segment_wall(events, s, e) for s, e in zip(starts, starts[1:] + [len(events)]))
    if running and starts:  # the driver is still going: count up to now
        wall += time.time() - events[-1]["time"]
    return wall


def _pool_sizes(rd: RunDir) -> tuple[dict, Optional[int]]:
    """Actors per stage and the planned generations, from the run's config."""
    try:
        config = rd.load_config()
    except (ConfigError, OSError):  # a summary of a half-written run dir still helps
        return {"adapter": 1, "generate": 1, "judge": 1}, None
    return ({"adapter": config.ray.training_pool.size,
             "generate": config.ray.generation_pool.size,
             "judge": config.ray.judge_pool.size}, config.search.generations)


def _best(rd: RunDir, history: list[dict]) -> Optional[dict]:
    """The final pick (best.json, re-evaluated on fresh seeds when the run finished), else
    the best genome of the generations so far."""
    best = rd.read_json("best.json")
    if best:
        return {"generation": best["generation"], "genome": best["id"],
                "display": best["display"], "scores": best.get("scores", {}),
                "fixed": best["fixed"], "final_scores": best.get("final"),
                "samples_per_problem": best.get("samples_per_problem")}
    if not history:
        return None
    h = max(history, key=lambda h: h["best_display"])
    return {"generation": h["generation"], "genome": h["best_genome"],
            "display": h["best_display"], "scores": h["best_scores"], "fixed": h["best_fixed"],
            "final_scores": None}


def _samples(judged: list[dict]) -> dict:
    """Sample counts per phase: how many, how many UNCHANGED / without a function, tokens."""
    out = {}
    for phase in sorted({e.get("phase", "search") for e in judged}):
        mine = [e for e in judged if e.get("phase", "search") == phase]
        tokens = [e["tokens"] for e in mine if "tokens" in e]
        out[phase] = {"samples": len(mine),
                      "unchanged": sum(e["status"] == "UNCHANGED" for e in mine),
                      "no_function": sum(e["status"] == "MISSING_FUNCTION" or not e.get("code")
                                         for e in mine),
                      "fixed": sum(e.get("scores", {}).get(PRIMARY, 0.0) >= 1.0 for e in mine),
                      "tokens_per_sample": round(sum(tokens) / len(tokens), 1)
                      if tokens else None}
    return out


def _cache(events: list[dict]) -> dict:
    """Adapter lookups by outcome, hit rate and duplicate trainings."""
    adapters = [e for e in events if e["event"] == "adapter_ready"]
    outcomes = Counter(e["outcome"] for e in adapters)
    trained_keys = Counter(e["key"] for e in adapters if e["outcome"] == "trained")
    return {"lookups": len(adapters), "hits": outcomes.get("hit", 0),
            "trained": outcomes.get("trained", 0), "joined": outcomes.get("joined", 0),
            "hit_rate": (outcomes.get("hit", 0) / len(adapters)) if adapters else None,
            "duplicate_trainings": sum(n - 1 for n in trained_keys.values())}


def _stages(events: list[dict], wall: float, pools: dict) -> dict:
    """Tasks, busy seconds, rate and pool utilisation of each stage."""
    trained = [e for e in events if e["event"] == "adapter_ready" and e["outcome"] == "trained"]
    generated = [e for e in events if e["event"] == "genome_generated"]
    judged = [e for e in events if e["event"] == "candidate_judged"]
    # An adapter's seconds are its wait (queue + training), so overlapping waits are merged.
    busy = {"adapter": _union_seconds([(e["time"] - e["seconds"], e["time"]) for e in trained]),
            "generate": sum(e["seconds"] for e in generated),
            "judge": sum(e["seconds"] for e in judged)}
    tasks = {"adapter": len(trained), "generate": sum(e["requests"] for e in generated),
             "judge": len(judged)}
    return {stage: {"tasks": n, "busy_seconds": round(busy[stage], 2),
                    "per_second": round(n / wall, 3) if wall else None,
                    "utilisation": round(busy[stage] / (wall * pools[stage]), 3)
                    if wall else None}
            for stage, n in tasks.items()}


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


def _best_lines(b: Optional[dict]) -> list[str]:
    """The best genome's scores (and fresh-seed scores) and the problems it fixed."""
    if not b:
        return []
    sc = "  ".join(f"{k} {b['scores'][k]:.3f}" for k in OBJECTIVES if k in b["scores"])
    n = f", n={b['samples_per_problem']}" if b.get("samples_per_problem") else ""
    lines = [f"best     {b['genome']} (gen {b['generation']}{n}): {sc}"]
    if b.get("final_scores"):
        lines.append(f"         on fresh seeds: pass@k {b['final_scores'][PRIMARY]:.3f}, "
                     f"bugfix {b['final_scores']['bugfix']:.3f}")
    return lines + [f"fixed    {', '.join(b['fixed']) or '-'}"]


def _sample_lines(samples: dict) -> list[str]:
    """Per phase: answers, fixed, UNCHANGED, without a function, tokens per answer."""
    lines = []
    for phase, n in samples.items():
        tps = "-" if n["tokens_per_sample"] is None else f"{n['tokens_per_sample']:.0f}"
        lines.append(f"samples  {phase}: {n['samples']} answers, {n['fixed']} fixed, "
                     f"{n['unchanged']} UNCHANGED, {n['no_function']} without a function, "
                     f"{tps} tokens per sample")
    return lines


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
    lines += _best_lines(s["best"]) + _sample_lines(s.get("samples", {}))
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
        extra = "" if h.get("unchanged") is None else (
            f"  UNCHANGED {h['unchanged']}  tokens/sample {h['tokens_per_sample']}")
        per = h.get("samples_per_problem") or {}
        racing = f"  n/genome {','.join(map(str, per.values()))}" if per else ""
        lines.append(f"  gen {h['generation']:>3}: best {h['best_display']:.3f}  median "
                     f"{h['median_display']:.3f}{extra}{racing}  cache hits {rate}  "
                     f"{h['seconds']:.0f} s")
    return "\n".join(lines + _heldout_lines(s.get("heldout")))


def _heldout_lines(h: Optional[dict]) -> list[str]:
    """The pick against the untuned greedy model on held-out problems, and its adapter gain."""
    if not h:
        return []
    lines = [f"held-out pick fixed {h['pick_fixed']} of {h['problems']} (pass@k "
             f"{h['pick_pass_at_k']:.3f}); untuned model at greedy decoding: "
             + ("-" if h["untuned_greedy_fixed"] is None else
                f"{h['untuned_greedy_fixed']} of {h['problems']} "
                f"(pass@k {h['untuned_greedy_pass_at_k']:.3f})")]
    gain = h.get("adapter_gain")
    if gain and gain.get("has_adapter"):
        lines.append(f"adapter  gain {gain['gain']:+.3f} held-out pass@k at the same knobs "
                     f"({gain['with_adapter']:.3f} with, {gain['without_adapter']:.3f} without)")
    elif gain:
        lines.append("adapter  none: the pick is the base model as it is (steps 0)")
    return lines


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
    return " | ".join(f"{s[k]:.3f}" for k in OBJECTIVES)


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
    header = "| | " + " | ".join(OBJECTIVES) + " |"
    rule = "|---" * (len(OBJECTIVES) + 1) + "|"
    if best:
        md += _best_section(rd, best, header, rule)
    held = rd.read_json("heldout.json")
    if held:
        md += ["## Held-out problems (never used for selection)", "",
               f"Problems: {', '.join(held['problems'])}", "", header, rule]
        md += [f"| `{g['id']}` | {_fmt_scores(g['scores'])} |" for g in held["genomes"]]
        if held.get("untuned_greedy"):
            untuned = held["untuned_greedy"]["scores"]
            md.append(f"| untuned model, greedy | {_fmt_scores(untuned)} |")
        md.append("")
        md += [f"{line}" for line in _heldout_lines(s.get("heldout"))] + [""]
    if base is not None:
        md += _comparison(rd, base)
    out = rd.path / REPORT_FILE
    out.write_text("\n".join(md) + "\n")
    return out


def _best_section(rd: RunDir, best: dict, header: str, rule: str) -> list[str]:
    """The final pick: genes, knobs, scores on search / fresh / held-out seeds, its fixes."""
    md = [f"## Best genome `{best['id']}` (generation {best['generation']})", "",
          f"- heavy genes: `{best['genome']['heavy']}`", f"- knobs: `{best['knobs']}`",
          f"- adapter key: `{best['key'][:16]}...`" if best.get("key") else
          "- adapter: none (steps 0: the base model as it is)",
          f"- samples per problem: {best.get('samples_per_problem', '-')} (search)",
          f"- {best.get('samples', 0)} search answers, {best.get('unchanged', 0)} UNCHANGED, "
          f"{best.get('tokens', 0) / max(1, best.get('samples', 0)):.0f} tokens per answer",
          f"- `{PRIMARY}` is pass@k per problem (mean over problems); `bugfix` is the "
          f"improvement over the buggy program", "", header, rule,
          f"| search | {_fmt_scores(best['scores'])} |"]
    if best.get("final"):
        md.append(f"| fresh seeds | {_fmt_scores(best['final'])} |")
    for g in (rd.read_json("heldout.json") or {}).get("genomes", []):
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
    return md


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
