"""The report's PNG plots (matplotlib's Agg backend, no display needed), read from a run dir."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Optional

from coral.objectives import BY_NAME, NAMES, PRIMARY
from coral.run.rundir import RunDir


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
    """Problems fixed (pass@k) vs each other objective: every evaluated genome, survivors,
    Pareto front."""
    ck, pareto = rd.load_checkpoint(), rd.read_json("pareto.json")
    if not ck or not pareto:
        return None
    plt = _plt()
    everyone = [g["scores"] for g in ck["genomes"].values()]
    pop = pareto["population"]
    others = [k for k in NAMES if k != PRIMARY]
    fig, axes = plt.subplots(1, len(others), figsize=(3.6 * len(others), 4), sharey=True)
    for ax, obj in zip(axes, others):
        ax.scatter([s[obj] for s in everyone], [s[PRIMARY] for s in everyone], s=18,
                   c="#bbbbbb", label="all evaluated")
        ax.scatter([p["scores"][obj] for p in pop], [p["scores"][PRIMARY] for p in pop],
                   s=30, c="#1f77b4", label="final population")
        front = [p for p in pop if p["front"]]
        ax.scatter([p["scores"][obj] for p in front], [p["scores"][PRIMARY] for p in front],
                   s=60, facecolors="none", edgecolors="#d62728", linewidths=1.5,
                   label="Pareto front")
        ax.set_xlabel(obj)
        ax.set_xlim(-0.05, 1.05)
        ax.set_ylim(-0.05, 1.05)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"{PRIMARY}: {BY_NAME[PRIMARY].meaning}"[:60])
    axes[0].legend(loc="upper left", fontsize=8)
    fig.suptitle(f"{rd.path.name}: {PRIMARY} (pass@k) vs the other objectives")
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
    ax.set_ylabel("fitness: pass@k over problems\n(+ mean objective / 1000 as tie-break)")
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
