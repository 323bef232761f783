"""compare.md and its two plots, from the summary `coral.run.compare.summarise` returns.

- compare.png: held-out pass@k of each strategy's final picks (every replicate a dot, the
  mean with its 95% bootstrap interval as a bar) and the baselines as horizontal lines.
- curves.png: best-so-far search pass@k against samples spent, one line per replicate
  (colour = strategy), so "equal budget" is visible as lines ending at the same x.
"""

from __future__ import annotations

import json
from pathlib import Path

from coral.run import stats
from coral.run.rundir import atomic_write_json, atomic_write_text

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e")
BASELINE_STYLE = {"unchanged": ":", "greedy_base": "--", "default_knobs": "-."}
BASELINE_WORDS = {"unchanged": "the buggy program, unchanged",
                  "greedy_base": "base model, no adapter, greedy decoding",
                  "default_knobs": "base model, no adapter, middle of every knob range"}


def _plt():
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_arms(doc: dict, out: Path) -> Path:
    """Held-out pass@k per strategy: replicates, mean and interval; baselines as lines."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    names = list(doc["arms"])
    for i, name in enumerate(names):
        arm = doc["arms"][name]
        ys = arm["heldout_pass_at_k"]
        ax.scatter([i] * len(ys), ys, color=COLORS[i % len(COLORS)], alpha=0.5, s=25)
        if arm["heldout_pass_at_k_mean"] is not None:
            lo, hi = arm["heldout_pass_at_k_ci95"]
            m = arm["heldout_pass_at_k_mean"]
            ax.errorbar([i + 0.15], [m], yerr=[[m - lo], [hi - m]], fmt="o", capsize=6,
                        color=COLORS[i % len(COLORS)], label=f"{name} mean, 95% interval")
    for name, value in doc["baselines"].items():
        if value is not None:
            ax.axhline(value, color="#555555", ls=BASELINE_STYLE[name], lw=1, label=name)
    ax.set_xticks(range(len(names)), names)
    ax.set_xlim(-0.6, len(names) - 0.4)
    ax.set_ylim(-0.03, 1.03)
    ax.set_ylabel("held-out pass@k of the final pick")
    ax.grid(alpha=0.3, axis="y")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="upper right")
    ax.set_title(f"held-out pass@k, {doc['replicates']} replicate(s) per strategy")
    return _save(plt, fig, out)


def plot_curves(doc: dict, out: Path) -> Path:
    """Best-so-far search pass@k against samples spent, one line per replicate."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, (name, arm) in enumerate(doc["arms"].items()):
        for r, curve in enumerate(arm["curves"]):
            if curve:
                xs, ys = zip(*curve)
                ax.plot(xs, ys, marker=".", color=COLORS[i % len(COLORS)], alpha=0.7,
                        label=name if r == 0 else None)
    if doc.get("budget_samples"):
        ax.axvline(doc["budget_samples"], color="#555555", ls=":", lw=1, label="budget")
    ax.set_xlabel("samples spent (answers generated and judged for the search)")
    ax.set_ylabel("best search pass@k so far")
    ax.set_ylim(-0.03, 1.03)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    ax.set_title("best so far against budget, one line per replicate")
    return _save(plt, fig, out)


def _save(plt, fig, out: Path) -> Path:
    """Lay out, write the PNG and free the figure."""
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _fmt(value, spec: str = ".3f") -> str:
    """A number or a dash."""
    return "-" if value is None else format(value, spec)


HOW_TO_READ = [
    "## How to read this", "",
    "- Each replicate is a whole run; replicate r of every strategy uses the same seed, hence "
    "the same sample seeds, so the strategies are compared pair by pair.",
    "- Intervals are percentile-bootstrap 95% intervals over replicates; with fewer than about "
    "5 replicates they are too narrow (they cannot be wider than the replicates' range), so "
    "treat them as optimistic.",
    f"- An interval of the paired difference that spans 0 means {stats.NO_DIFFERENCE}; it does "
    "not mean the strategies are equal.",
    "- To detect a difference delta when the paired differences have standard deviation sd, "
    "about 7.85 (sd / delta)^2 replicates are needed (5% two-sided, 80% power); see "
    "docs/running.md.", ""]


def markdown(doc: dict) -> str:
    """The comparison as markdown: table, verdict, unfinished arms, plots, how to read it."""
    budget = f"{doc['budget_samples']} samples" if doc["budget_samples"] else \
        "search.generations"
    from coral.run.compare_baselines import beats_untuned

    md = ["# CORAL comparison", "", beats_untuned(doc), "",
          f"{doc['replicates']} of {doc['replicates_planned']} replicate(s) complete per "
          f"strategy; budget per run: {budget}.", "", *_table(doc), ""]
    diff = doc["paired_difference"]
    if diff:
        md += [f"**Paired difference {diff['first']} - {diff['second']}**: "
               f"{diff['mean']:.3f}, 95% interval [{diff['ci95'][0]:.3f}, "
               f"{diff['ci95'][1]:.3f}]; {diff['verdict'].split(': ', 1)[1]}.", ""]
    unfinished = [f"`{name}` {r['state']} ({r['samples_used']} samples)"
                  for name, r in doc.get("runs", {}).items() if r["state"] != "finished"]
    if unfinished:
        md += ["Not finished: " + ", ".join(unfinished) + ". Running the same `coral compare` "
               "command again resumes them.", ""]
    md += ["![held-out pass@k per arm](compare.png)", "",
           "![best so far against samples spent](curves.png)", "", *HOW_TO_READ]
    return "\n".join(md)


def _table(doc: dict) -> list[str]:
    """One row per arm (mean, interval, per replicate, samples used), then the baselines."""
    rows = ["| arm | held-out pass@k (mean) | 95% interval | fixed (mean) | per replicate "
            "| samples used | vs greedy untuned | adapter gain |",
            "|---|---|---|---|---|---|---|---|"]
    for name, arm in doc["arms"].items():
        ci = arm["heldout_pass_at_k_ci95"]
        vs = arm.get("vs_baselines", {}).get("greedy_base") or {}
        gains = [_fmt(g, "+.3f") for g in arm.get("adapter_gain", [])]
        rows.append(f"| {name} | {_fmt(arm['heldout_pass_at_k_mean'])} | "
                    f"{_interval(ci)} | "
                    f"{_fmt(arm['heldout_fixed_mean'], '.2f')} | "
                    f"{', '.join(f'{v:.3f}' for v in arm['heldout_pass_at_k'])} | "
                    f"{', '.join(map(str, arm['samples_used']))} | "
                    f"{_fmt(vs.get('mean'), '+.3f')} {_interval(vs.get('ci95'))} | "
                    f"{', '.join(gains) or '-'} |")
    for name, value in doc["baselines"].items():
        rows.append(f"| {name} ({BASELINE_WORDS[name]}) | {_fmt(value)} | | | | | | |")
    return rows


def _interval(ci) -> str:
    """[low, high] or a dash."""
    return "-" if ci is None else f"[{ci[0]:.3f}, {ci[1]:.3f}]"


def write_compare_report(root: Path, doc: dict) -> Path:
    """compare.json, compare.md, compare.png and curves.png into the compare directory."""
    root = Path(root)
    atomic_write_json(root / "compare.json", doc)
    plot_arms(doc, root / "compare.png")
    plot_curves(doc, root / "curves.png")
    out = root / "compare.md"
    atomic_write_text(out, markdown(doc) + "\n")
    return out


def json_line(doc: dict) -> str:
    """The `--json` line: the summary without the bulky curves."""
    slim = {**doc, "arms": {k: {f: v for f, v in a.items() if f != "curves"}
                            for k, a in doc["arms"].items()}}
    return json.dumps(slim, separators=(",", ":"))
