"""`coral compare CONFIG [--set K=V ...] --strategies nsga2,random [--replicates R] [--json]`.

Runs every strategy R times at the config's budget as ordinary run directories under one
compare directory (see coral/run/compare.py), then the baselines, and writes compare.md.
Running the same command again resumes whatever is missing. With `--json` the last line of
the output is the summary as one JSON object.
"""

from __future__ import annotations

import argparse
import sys

from coral.run.compare import DEFAULT_REPLICATES, DEFAULT_STRATEGIES, parse_strategies


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `compare` command."""
    p = sub.add_parser("compare", help="strategies side by side at equal budget, replicated, "
                                       "with 95%% intervals (resumable)")
    p.add_argument("config", help="YAML config, e.g. configs/compare-local.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. search.budget.samples=400")
    p.add_argument("--strategies", default=",".join(DEFAULT_STRATEGIES),
                   help="comma-separated search strategies; the paired difference is "
                        "first - second (default: %(default)s)")
    p.add_argument("--replicates", type=int, default=DEFAULT_REPLICATES,
                   help="runs per strategy; replicate r of every strategy shares its seeds "
                        "(default: %(default)s)")
    p.add_argument("--json", action="store_true",
                   help="print the summary as one JSON object on the last line")
    p.add_argument("--report-only", action="store_true",
                   help="run nothing: summarise what the compare directory holds so far "
                        "(a running or interrupted comparison) and rewrite compare.md")
    p.add_argument("--in-process", action="store_true",
                   help="run the pools in this process instead of Ray actors (debugging)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_compare)


def _compare(args: argparse.Namespace) -> int:
    """Load the config, run (or resume) the comparison, print the summary."""
    from coral import config as cfgmod
    from coral.run.compare import check_plan, compare_path, run_compare
    from coral.run.engine import ResumeRefused, problems_for

    cfg = cfgmod.load(args.config, args.overrides)
    if args.report_only:
        return _report_only(compare_path(cfg), args.json)
    strategies = parse_strategies(args.strategies)
    train, held = problems_for(cfg)
    check_plan(cfg, strategies, args.replicates, held)  # before any pool is started
    from cluster.driver import open_pools, run  # Ray only for commands that use it

    quiet = True if args.quiet or args.json else None

    def run_arm(arm_cfg, pools):
        return run(arm_cfg, resume=True, quiet=quiet, pools=pools)

    try:
        with open_pools(cfg, (*train, *held), args.in_process) as pools:
            doc = run_compare(cfg, strategies, args.replicates, pools, run_arm, held)
    except ResumeRefused as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return _print(doc, compare_path(cfg), args.json)


def _report_only(root, as_json: bool) -> int:
    """Summarise a compare directory without running anything."""
    from coral.run.compare import summarise
    from coral.run.compare_report import write_compare_report

    if not (root / "plan.json").exists():
        print(f"error: {root} is not a compare directory (no plan.json)", file=sys.stderr)
        return 2
    doc = summarise(root)
    write_compare_report(root, doc)
    return _print(doc, root, as_json)


def _print(doc: dict, root, as_json: bool) -> int:
    """The summary's text, where compare.md is, and the JSON line last."""
    from coral.run.compare import describe
    from coral.run.compare_report import json_line

    print(describe(doc))
    print(f"report:  {root / 'compare.md'}")
    if as_json:
        print(json_line(doc))
    return 0
