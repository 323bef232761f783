"""`coral status RUN_DIR [--json]`: where a run stands (running, stopped or finished)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `status` command."""
    p = sub.add_parser("status", help="generation, best scores, cache hit rate, throughput")
    p.add_argument("run_dir", help="a run directory, e.g. runs/local")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_status)


def _status(args: argparse.Namespace) -> int:
    """Print the run summary as text or JSON."""
    from coral.run.budget import format_standing, standing_of
    from coral.run.report import format_summary, run_summary
    from coral.run.rundir import read_json

    if not (Path(args.run_dir) / "events.jsonl").exists():
        print(f"error: {args.run_dir} is not a run directory (no events.jsonl)", file=sys.stderr)
        return 2
    summary = run_summary(args.run_dir)
    running = summary["state"] == "running"  # count a live driver up to now
    summary["budget"] = standing_of(args.run_dir, time.time() if running else None)
    # Where to watch it live (written by the driver at start): only while the run is up.
    summary["ray"] = read_json(Path(args.run_dir) / "ray.json") if running else None
    if args.json:
        print(json.dumps(summary, indent=1))
        return 0
    text = format_summary(summary)
    if summary["budget"]:
        text += "\n" + format_standing(summary["budget"])
    live = summary["ray"] or {}
    if live.get("dashboard"):
        text += f"\ndashboard {live['dashboard']}"
    if live.get("metrics"):
        text += f"\nmetrics  {', '.join(live['metrics'])} (Prometheus)"
    print(text)
    return 0
