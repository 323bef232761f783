"""`coral report RUN_DIR [--baseline OTHER_RUN_DIR]`: plots and report.md of a run."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `report` command."""
    p = sub.add_parser("report", help="write PNG plots and report.md into a run directory")
    p.add_argument("run_dir", help="a run directory, e.g. runs/local")
    p.add_argument("--baseline", default=None, metavar="OTHER_RUN_DIR",
                   help="compare with this run (default: a sibling <name>-random if present)")
    p.set_defaults(func=_report)


def _report(args: argparse.Namespace) -> int:
    """Write the report and print its path."""
    from coral.run.report import report_inputs, write_report

    missing = [k for k, ok in report_inputs(args.run_dir).items() if not ok]
    if "events.jsonl" in missing:
        print(f"error: {args.run_dir} is not a run directory (no events.jsonl)", file=sys.stderr)
        return 2
    if args.baseline and not (Path(args.baseline) / "checkpoint.json").exists():
        print(f"error: baseline {args.baseline} has no checkpoint.json", file=sys.stderr)
        return 2
    out = write_report(args.run_dir, args.baseline)
    print(f"report: {out}")
    for png in sorted(out.parent.glob("*.png")):
        print(f"plot:   {png}")
    return 0
