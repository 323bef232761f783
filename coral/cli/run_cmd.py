"""`coral run CONFIG [--set K=V ...] [--resume/--no-resume]`: one whole evolution run."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `run` command."""
    p = sub.add_parser("run", help="run (or resume) an evolution run; writes the report at the end")
    p.add_argument("config", help="YAML config, e.g. configs/local.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. search.generations=5")
    p.add_argument("--resume", dest="resume", action="store_true", default=True,
                   help="continue from the run directory's checkpoint when there is one "
                        "(default)")
    p.add_argument("--no-resume", dest="resume", action="store_false",
                   help="start over, discarding the run directory's previous results")
    p.add_argument("--in-process", action="store_true",
                   help="run the pools in this process instead of Ray actors (debugging)")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="no progress bars, generation lines or heartbeats; only warnings and "
                        "the final answer")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    """Load the config, run through cluster.driver (clean console, log in the run directory's
    run.log), print the final answer."""
    from coral import config as cfgmod

    cfg = cfgmod.load(args.config, args.overrides)
    from coral.search.strategies import check_strategy

    check_strategy(cfg)
    if not args.in_process:   # the plan's check first: a pool that cannot start waits forever
        from cluster.definitions import local_cluster
        from coral.cli.config_cmd import plan_gate

        if not plan_gate(cfg, local_cluster(cfg.ray) if cfg.ray.address is None else None):
            return 1
    from cluster.driver import launch  # Ray is imported only by commands that use it

    return launch(cfg, resume=args.resume, quiet=args.quiet, in_process=args.in_process,
                  verbose=getattr(args, "verbose", False))
