"""`coral compare`: strategies side by side at equal budget, replicated, with intervals.

A compare directory `<run.runs_dir>/<run.name>-compare/` holds one ordinary run directory per
(strategy, replicate), named `<strategy>-r<replicate>`, plus the baselines and the summary:

    plan.json          strategies, replicates and each arm's seed
    nsga2-r0/ ...      run directories (coral status / coral report work on them)
    baselines.json     the untuned references on the held-out problems, per replicate
    compare.json       the summary (what `--json` prints), compare.md, compare.png, curves.png

Replicate r of every strategy runs with the same seed, `replicate_seed(run.seed, r)`: the
sample seeds derive from the run seed, so replicate r of every arm (and the baselines of
replicate r) draws the same samples, and the strategies are compared by paired differences.
Arms run in sequence, replicate by replicate (nsga2-r0, random-r0, nsga2-r1, ...), so a
compare stopped half-way already holds complete pairs (and their baselines, measured
as each replicate completes); all arms use one set of pools.

Resume: running the same command again skips finished arms (their events end with
`run_ended` and their snapshot agrees on `outcome_fields`), resumes the interrupted one from
its checkpoint, and reuses baselines already measured. A budget raised since is a different
arm config: the arm resumes and spends the rest (search.budget is not search-relevant).

The arms' held-out numbers are the engine's (heldout.json of each run: its final pick
re-scored on the held-out problems); the baselines go through the same pools on the same
problems and seeds: the unchanged buggy program, the base model without adapter at greedy
decoding, and the base model at the config's default knobs (the middle of every knob range).
The two untuned ones decode with exactly the knobs of the search's own untuned genomes
(coral.search.baselines). Each arm's `vs_baselines` is its held-out pass@k minus each
untuned baseline's, paired per replicate (same problems, same seeds), with a 95% bootstrap
interval: whether the search beats the model the user started with, at this budget.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

from coral import config as cfgmod
from coral.config import Config, ConfigError
from coral.judge.quixbugs import Problem
from coral.run import stats
from coral.run.budget import spent
from coral.run.pools import Pools
from coral.run.rundir import (RunDir, atomic_write_json, read_events, read_json,
                              relevant_fields)
from coral.run.compare_baselines import (BASELINES, BASELINES_FILE, beats_untuned,
                                         measure_baselines, vs_baselines)

log = logging.getLogger(__name__)

PLAN_FILE, COMPARE_FILE = "plan.json", "compare.json"
# `coral compare`'s defaults (and `coral submit --compare`'s): the paired difference is
# first - second.
DEFAULT_STRATEGIES, DEFAULT_REPLICATES = ("nsga2", "random"), 3


def parse_strategies(text: str) -> tuple[str, ...]:
    """`--strategies nsga2,random` as names (blanks dropped; `check_request` judges them)."""
    return tuple(s.strip() for s in text.split(",") if s.strip())
# Run one arm in its run directory with the shared pools (cluster.driver.run in production).
RunArm = Callable[[Config, Pools], Path]


@dataclass(frozen=True)
class Arm:
    """One run of a comparison: a strategy at one replicate."""

    strategy: str
    replicate: int
    seed: int
    cfg: Config

    @property
    def name(self) -> str:
        """Run directory name inside the compare directory."""
        return f"{self.strategy}-r{self.replicate}"

    @property
    def path(self) -> Path:
        """The arm's run directory."""
        return Path(self.cfg.run.runs_dir) / self.cfg.run.name


def compare_path(cfg: Config) -> Path:
    """The compare directory of a config: runs_dir/<name>-compare."""
    return Path(cfg.run.runs_dir) / f"{cfg.run.name}-compare"


def replicate_seed(run_seed: int, replicate: int) -> int:
    """Seed of replicate r, shared by every strategy: sha256 of (run seed, r), 31 bits."""
    digest = hashlib.sha256(f"{run_seed}:replicate:{replicate}".encode()).hexdigest()
    return int(digest[:8], 16) & 0x7FFFFFFF


def plan(cfg: Config, strategies: Sequence[str], replicates: int) -> list[Arm]:
    """Every arm, replicate-major (complete pairs first), each an ordinary run config."""
    root = compare_path(cfg)
    raw = cfgmod.to_dict(cfg)
    arms = []
    for r in range(replicates):
        seed = replicate_seed(cfg.run.seed, r)
        for strategy in strategies:
            arm_raw = cfgmod.apply_overrides(raw, [
                f"run.runs_dir={root}", f"run.name={strategy}-r{r}", f"run.seed={seed}",
                f"search.strategy={strategy}"])
            arms.append(Arm(strategy, r, seed, cfgmod.from_dict(arm_raw, cfg.source)))
    return arms


def check_request(cfg: Config, strategies: Sequence[str], replicates: int) -> None:
    """Refuse, from the config alone, a comparison that could not say anything (used by
    `coral submit --compare` too, where the dataset is on the cluster, not here)."""
    if replicates < 1:
        raise ConfigError(f"--replicates must be >= 1, got {replicates}")
    if not strategies or len(set(strategies)) != len(strategies):
        raise ConfigError(f"--strategies must name distinct strategies, got {list(strategies)}")
    if cfg.dataset.held_out_fraction <= 0 or not cfg.run.held_out_eval:
        raise ConfigError(f"{cfg.source}: a comparison scores held-out problems: set "
                          "dataset.held_out_fraction > 0 and run.held_out_eval: true")
    from coral.search.strategies import check_strategy

    for arm in plan(cfg, strategies, 1):  # an unknown strategy is a config error naming it
        check_strategy(arm.cfg)


def check_plan(cfg: Config, strategies: Sequence[str], replicates: int,
               held_out: Sequence[Problem]) -> None:
    """`check_request`, and the split must leave held-out problems (before any compute)."""
    check_request(cfg, strategies, replicates)
    if not held_out:
        raise ConfigError(f"{cfg.source}: the split leaves no held-out problem: raise "
                          "dataset.held_out_fraction or list more dataset.problems")


def outcome_fields(cfg: Config) -> dict:
    """What decides a finished run's results: the search-relevant fields plus where it stops
    and what is checked at the end (not where or how fast it ran)."""
    raw = cfgmod.to_dict(cfg)
    return {**relevant_fields(cfg), "search.generations": cfg.search.generations,
            "search.budget": raw["search"]["budget"], "run.held_out_eval": cfg.run.held_out_eval,
            "run.held_out_top_k": cfg.run.held_out_top_k}


def finished(arm: Arm) -> bool:
    """The arm ran to its end with this config's outcome fields (nothing left to resume);
    a change of resources only (ray, storage, batch sizes) does not re-run it."""
    events = list(read_events(arm.path))
    if not events or events[-1]["event"] != "run_ended":
        return False
    try:
        return outcome_fields(RunDir(arm.path).load_config()) == outcome_fields(arm.cfg)
    except (ConfigError, OSError):
        return False


def run_compare(cfg: Config, strategies: Sequence[str], replicates: int, pools: Pools,
                run_arm: RunArm, held_out: Sequence[Problem]) -> dict:
    """Run (or resume) every arm, measure the baselines, write and return the summary."""
    check_plan(cfg, strategies, replicates, held_out)
    root = compare_path(cfg)
    arms = plan(cfg, strategies, replicates)
    atomic_write_json(root / PLAN_FILE, {
        "config": cfg.source, "strategies": list(strategies), "replicates": replicates,
        "budget_samples": cfg.search.budget.samples or None,
        "arms": [{"name": a.name, "strategy": a.strategy, "replicate": a.replicate,
                  "seed": a.seed} for a in arms]})
    for i, arm in enumerate(arms):
        if finished(arm):
            log.info("compare: %s already finished", arm.name)
        else:
            log.info("compare: running %s (seed %d)", arm.name, arm.seed)
            run_arm(arm.cfg, pools)
        if (i + 1) % len(strategies) == 0:  # a replicate is complete: its baselines too
            measure_baselines(cfg, pools, held_out, [arm.seed], root)
    doc = summarise(root)
    from coral.run.compare_report import write_compare_report
    write_compare_report(root, doc)
    return doc


# ------------------------------------------------------------------------ summary

def arm_result(path: Path) -> Optional[dict]:
    """One finished arm: held-out pass@k and fixed count of its final pick, samples spent,
    and its best-so-far curve (None while the arm has no held-out result)."""
    rd = RunDir(path)
    best, held = rd.read_json("best.json"), rd.read_json("heldout.json")
    if not best or not held:
        return None
    pick = next((g for g in held["genomes"] if g["id"] == best["id"]), None)
    if pick is None:
        return None
    events = rd.events()
    gain = held.get("adapter_gain") or {}
    return {"heldout_pass_at_k": pick["scores"]["fixed"], "heldout_fixed": len(pick["fixed"]),
            "samples_used": spent(events).samples, "curve": best_so_far(rd, events),
            "adapter_gain": gain.get("gain"), "pick_has_adapter": gain.get("has_adapter"),
            **train_scores(rd)}


def train_scores(rd: RunDir) -> dict:
    """The search's best train pass@k over every genome it scored, and the untuned model's
    at greedy decoding when the search scored it (seeded or found), on the same seeds."""
    from coral.search.baselines import role_of
    from coral.search.genome import genome_from_dict

    ck = rd.load_checkpoint() or {"genomes": {}}
    try:
        search_cfg = rd.load_config().search
    except (ConfigError, OSError):
        search_cfg = None
    best, greedy = None, None
    for rec in ck["genomes"].values():
        value = rec["scores"]["fixed"]
        best = value if best is None else max(best, value)
        if search_cfg and role_of(genome_from_dict(rec["genome"]), search_cfg) == "greedy_base":
            greedy = value
    return {"best_train_pass_at_k": best, "untuned_greedy_train_pass_at_k": greedy}


def best_so_far(rd: RunDir, events: list[dict]) -> list[list[float]]:
    """[samples spent, best search pass@k so far] at the end of every generation."""
    ck = rd.load_checkpoint() or {"genomes": {}}
    per_gen: dict[int, float] = {}
    for rec in ck["genomes"].values():
        g = rec["generation"]
        per_gen[g] = max(per_gen.get(g, 0.0), rec["scores"]["fixed"])
    samples: dict[int, int] = {}
    for ev in events:
        if ev["event"] == "candidate_judged" and ev.get("phase") == "search":
            samples[ev["generation"]] = samples.get(ev["generation"], 0) + 1
    curve, total, best = [[0, 0.0]], 0, 0.0
    for g in sorted(per_gen):
        total += samples.get(g, 0)
        best = max(best, per_gen[g])
        curve.append([total, best])
    return curve


def summarise(root: str | Path) -> dict:
    """The comparison's summary from the compare directory (the `--json` object)."""
    root = Path(root)
    plan_doc = read_json(root / PLAN_FILE)
    if plan_doc is None:
        raise FileNotFoundError(f"{root}: not a compare directory (no {PLAN_FILE})")
    strategies, replicates = plan_doc["strategies"], plan_doc["replicates"]
    results = {a["name"]: arm_result(root / a["name"]) for a in plan_doc["arms"]}
    seeds = sorted({a["seed"] for a in plan_doc["arms"]})
    per_seed = (read_json(root / BASELINES_FILE) or {}).get("per_seed", {})
    # Only replicates every strategy finished are compared (a half-done compare still reads).
    done = [r for r in range(replicates)
            if all(results.get(f"{s}-r{r}") for s in strategies)]
    seed_of = {a["replicate"]: a["seed"] for a in plan_doc["arms"]}
    arms = {}
    for i, s in enumerate(strategies):
        rows = [results[f"{s}-r{r}"] for r in done]
        iv = stats.bootstrap_mean([x["heldout_pass_at_k"] for x in rows], seed=i)
        arms[s] = {"heldout_pass_at_k_mean": _mean([x["heldout_pass_at_k"] for x in rows]),
                   "heldout_pass_at_k_ci95": iv.ci() if rows else None,
                   "heldout_fixed_mean": _mean([x["heldout_fixed"] for x in rows]),
                   "samples_used": [x["samples_used"] for x in rows],
                   "heldout_pass_at_k": [x["heldout_pass_at_k"] for x in rows],
                   "vs_baselines": vs_baselines(
                       [x["heldout_pass_at_k"] for x in rows],
                       [per_seed.get(str(seed_of[r])) for r in done], seed=i),
                   **{name: [x.get(name) for x in rows] for name in PER_REPLICATE},
                   "curves": [x["curve"] for x in rows]}
    diff = None
    if len(strategies) >= 2 and done:
        a, b = strategies[0], strategies[1]
        iv = stats.paired_difference(arms[a]["heldout_pass_at_k"],
                                     arms[b]["heldout_pass_at_k"])
        diff = {"first": a, "second": b, "mean": iv.mean, "ci95": iv.ci(),
                "verdict": stats.verdict(iv, a, b)}
    baselines = {name: _mean([per_seed[str(x)][name]["pass_at_k"] for x in seeds
                              if str(x) in per_seed]) for name in BASELINES}
    runs = {a["name"]: _progress(root / a["name"], results[a["name"]] is not None)
            for a in plan_doc["arms"]}
    return {"arms": arms, "baselines": baselines, "paired_difference": diff,
            "replicates": len(done), "replicates_planned": replicates, "runs": runs,
            "budget_samples": plan_doc.get("budget_samples"), "compare_dir": str(root)}


# Per-replicate values of each arm listed beside its held-out results.
PER_REPLICATE = ("best_train_pass_at_k", "untuned_greedy_train_pass_at_k", "adapter_gain",
                 "pick_has_adapter")


def _progress(path: Path, done: bool) -> dict:
    """How far one arm got: finished, started (samples spent so far) or not started."""
    if not (path / "events.jsonl").exists():
        return {"state": "not started", "samples_used": 0}
    return {"state": "finished" if done else "started",
            "samples_used": spent(read_events(path)).samples}


def _mean(values: list[float]) -> Optional[float]:
    """Mean, or None for no values."""
    return sum(values) / len(values) if values else None


def describe(doc: dict) -> str:
    """Text lines for the terminal (compare.md holds the same and the plots)."""
    lines = [f"compare  {doc['compare_dir']}: {doc['replicates']} of "
             f"{doc['replicates_planned']} replicate(s) complete"]
    for s, a in doc["arms"].items():
        if a["heldout_pass_at_k_mean"] is None:
            lines.append(f"{s:<14} no finished replicate yet")
            continue
        lo, hi = a["heldout_pass_at_k_ci95"]
        lines.append(f"{s:<14} held-out pass@k {a['heldout_pass_at_k_mean']:.3f} "
                     f"[{lo:.3f}, {hi:.3f}]  fixed {a['heldout_fixed_mean']:.2f}  "
                     f"samples {a['samples_used']}")
        gains = [g for g in a.get("adapter_gain", []) if g is not None]
        lines.append(f"{'':<14} best train pass@k {a.get('best_train_pass_at_k')} vs untuned "
                     f"greedy {a.get('untuned_greedy_train_pass_at_k')}; adapter gain "
                     f"{_mean(gains) if gains else '-'}")
    for name, v in doc["baselines"].items():
        lines.append(f"{name:<14} held-out pass@k " + ("-" if v is None else f"{v:.3f}"))
    lines.append(beats_untuned(doc))
    if doc["paired_difference"]:
        lines.append(doc["paired_difference"]["verdict"])
    unfinished = [f"{name} {r['state']} ({r['samples_used']} samples)"
                  for name, r in doc.get("runs", {}).items() if r["state"] != "finished"]
    if unfinished:
        lines.append("not finished: " + ", ".join(unfinished) +
                     "; run the same command again to resume")
    return "\n".join(lines)
