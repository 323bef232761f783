"""The untuned references of `coral compare`, and each arm against them.

Measured once per replicate seed through the same pools on the same held-out problems and
sample seeds as the arms' held-out check (baselines.json): the unchanged buggy program, the
base model without adapter at greedy decoding, and at the default knobs. The two untuned
ones decode with exactly the knobs of the search's own untuned genomes
(coral.search.baselines). `vs_baselines` pairs an arm's held-out pass@k with each untuned
baseline's, replicate by replicate, with a 95% bootstrap interval.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

from coral import config as cfgmod
from coral.config import Config
from coral.judge import fitness
from coral.judge.quixbugs import Problem
from coral.messages import Candidate, GenerationRequest
from coral.run import stats
from coral.run.pipeline import HELDOUT, sample_seed
from coral.run.pools import Pools
from coral.run.rundir import atomic_write_json, read_json
from coral.search.baselines import untuned_knobs

BASELINES_FILE = "baselines.json"
BASELINES = ("unchanged", "greedy_base", "default_knobs")
UNTUNED = ("greedy_base", "default_knobs")  # the baselines each arm is paired against


def measure_baselines(cfg: Config, pools: Pools, held_out: Sequence[Problem],
                      seeds: Sequence[int], root: Path) -> dict:
    """Held-out pass@k of the baselines for these replicate seeds (measured once per seed and
    kept in baselines.json beside the others)."""
    key = {"model": cfg.model.base, "knobs": cfgmod.to_dict(cfg)["knobs"],
           "ca": cfgmod.to_dict(cfg)["search"]["ca"],
           "problems": [p.name for p in held_out], "n": cfg.search.samples_per_problem,
           "k": cfg.search.pass_at_k}
    cached = read_json(root / BASELINES_FILE) or {}
    per_seed = dict(cached.get("per_seed", {})) if cached.get("key") == key else {}
    for seed in seeds:
        if str(seed) in per_seed:
            continue
        per_seed[str(seed)] = _baselines_once(cfg, pools, held_out, seed)
        atomic_write_json(root / BASELINES_FILE, {"key": key, "per_seed": per_seed})
    return per_seed


def _baselines_once(cfg: Config, pools: Pools, held_out: Sequence[Problem],
                    seed: int) -> dict:
    """The three baselines with one replicate's held-out sample seeds.

    default_knobs draws the same n samples per problem as the arms' held-out check (same
    seeds, `search.samples_per_problem`); greedy decoding and the unchanged program give the
    same answer whatever the seed, so one sample each is their exact pass@k.
    """
    from coral.model.extract import extract_function

    n = cfg.search.samples_per_problem
    knobs = untuned_knobs(cfg.search, cfg.knobs)
    draws = {"unchanged": 1, "greedy_base": 1, "default_knobs": n}
    unchanged = [Candidate("unchanged", p.name, p.buggy_source) for p in held_out]
    requests = [GenerationRequest(
        request_id=f"{name}/{p.name}/{i}", genome_id=name, problem=p.name,
        buggy_source=p.buggy_source, adapter=None, knobs=knobs[name],
        seed=sample_seed(seed, p.name, i, HELDOUT))
        for name in UNTUNED for p in held_out for i in range(draws[name])]
    by_name = {p.name: p for p in held_out}
    texts = _run(pools, pools.submit_generate(requests))
    generated = [Candidate(r.genome_id, r.problem,
                           extract_function(r.text, by_name[r.problem].function) or "", r.text)
                 for r in texts]
    verdicts = _run(pools, pools.submit_judge(unchanged + generated))
    out = {}
    for name in BASELINES:
        correct = {p.name: 0 for p in held_out}
        for v in verdicts:
            if v.genome_id == name and v.fixed:
                correct[v.problem] += 1
        k = min(cfg.search.pass_at_k, draws[name])
        out[name] = {"pass_at_k": sum(fitness.pass_at_k(draws[name], c, k)
                                      for c in correct.values()) / len(held_out),
                     "fixed": sorted(prob for prob, c in correct.items() if c)}
    return out


def _run(pools: Pools, handle: Any) -> Any:
    """Wait for one handle and return its value."""
    pools.wait([handle], num_returns=1)
    return pools.get(handle)


def vs_baselines(values: Sequence[float], baselines: Sequence[Optional[dict]],
                 seed: int = 0) -> dict:
    """Per untuned baseline: mean of (arm - baseline) over the replicates whose baselines
    are measured (paired: same held-out problems and seeds), with its 95% bootstrap interval."""
    out = {}
    for name in UNTUNED:
        pairs = [(v, b[name]["pass_at_k"]) for v, b in zip(values, baselines) if b]
        if not pairs:
            out[name] = {"mean": None, "ci95": None, "n": 0}
            continue
        iv = stats.paired_difference([a for a, _ in pairs], [b for _, b in pairs], seed)
        out[name] = {"mean": iv.mean, "ci95": iv.ci(), "n": iv.n}
    return out


def beats_untuned(doc: dict) -> str:
    """One sentence: does the search beat the untuned model (greedy) at this budget?"""
    words = []
    for s, arm in doc["arms"].items():
        vs = arm.get("vs_baselines", {}).get("greedy_base") or {}
        if vs.get("mean") is None:
            words.append(f"{s}: not measured yet")
            continue
        lo, hi = vs["ci95"]
        if vs["n"] >= 2 and lo > 0:
            verdict = "beats the untuned model"
        elif vs["n"] >= 2 and hi < 0:
            verdict = "is worse than the untuned model"
        elif vs["mean"] >= 0:
            verdict = "does not fall below the untuned model (no detectable gain)"
        else:
            verdict = "falls below the untuned model (interval spans 0)"
        words.append(f"{s} {verdict}: held-out pass@k {vs['mean']:+.3f} "
                     f"[{lo:+.3f}, {hi:+.3f}] vs greedy decoding without adapter")
    budget = doc.get("budget_samples")
    at = f"at {budget} samples" if budget else "at this budget"
    return f"{at.capitalize()}: " + "; ".join(words) + "."
