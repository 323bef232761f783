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
    """Load the config, run (or resume) the comparison on a clean console, print the summary."""
    from coral import config as cfgmod
    from coral.run.compare import check_plan, compare_path
    from coral.run.console import COMPARE_LOG_FILE, console
    from coral.run.engine import ResumeRefused, problems_for

    cfg = cfgmod.load(args.config, args.overrides)
    root = compare_path(cfg)
    if args.report_only:
        return _report_only(root, args.json)
    strategies = parse_strategies(args.strategies)
    train, held = problems_for(cfg)
    check_plan(cfg, strategies, args.replicates, held)  # before any pool is started
    verbose = getattr(args, "verbose", False)
    # Like `coral run`: CORAL's lines on the console, Ray's and the workers' output in
    # compare.log and each run's run.log; --json keeps the console quiet for its last line.
    with console(root, quiet=args.quiet or args.json, verbose=verbose,
                 generations=cfg.search.generations, pass_at_k=cfg.search.pass_at_k,
                 log_file=COMPARE_LOG_FILE) as progress:
        progress.write(f"coral compare {cfg.run.name}: {', '.join(strategies)} x "
                       f"{args.replicates} replicate(s); details in {root / COMPARE_LOG_FILE} "
                       "and each run's run.log")
        try:
            doc = _run_arms(cfg, strategies, args, (*train, *held), held, progress, verbose)
        except ResumeRefused as exc:
            doc, refused = None, exc
    if doc is None:   # printed here: inside console() stderr goes to compare.log
        print(f"error: {refused}", file=sys.stderr)
        return 2
    return _print(doc, root, args.json)


def _run_arms(cfg, strategies, args, problems, held, progress, verbose: bool) -> dict:
    """Every arm through one set of pools; a line per finished arm (those finished before
    included), each arm's records in its own run.log."""
    from cluster.driver import open_pools, run  # Ray only for commands that use it
    from coral.run.compare import finished, plan, run_compare
    from coral.run.console import run_log
    from coral.run.rundir import run_path

    arms = {arm.name: arm for arm in plan(cfg, strategies, args.replicates)}
    for arm in arms.values():
        if finished(arm):
            progress.write(arm_line(arm, cfg) + "  (finished before)")

    def run_arm(arm_cfg, pools):
        arm = arms[arm_cfg.run.name]
        progress.restart(f"{arm.name} ", arm_cfg.search.generations)
        with run_log(run_path(arm_cfg), verbose):
            path = run(arm_cfg, resume=True, pools=pools, progress=progress)
        progress.write(arm_line(arm, cfg))
        return path

    with open_pools(cfg, problems, args.in_process) as pools:
        return run_compare(cfg, strategies, args.replicates, pools, run_arm, held)


def arm_line(arm, cfg) -> str:
    """'nsga2 replicate 0: 48 samples, held-out pass@1 0.250 (fixed 1)' for a finished run."""
    from coral.run.compare import arm_result

    head = f"{arm.strategy} replicate {arm.replicate}:"
    result = arm_result(arm.path)
    if result is None:
        return f"{head} no held-out result (see {arm.path / 'run.log'})"
    return (f"{head} {result['samples_used']} samples, held-out pass@{cfg.search.pass_at_k} "
            f"{result['heldout_pass_at_k']:.3f} (fixed {result['heldout_fixed']})")


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
