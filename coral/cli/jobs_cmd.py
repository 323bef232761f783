"""`coral submit | logs | stop | jobs`: run CORAL as a Ray job on any cluster with a dashboard.

All four talk to the Ray dashboard (``--address http://HEAD:8265``, default $RAY_ADDRESS or
the local head); the work is in `cluster.jobs`, imported when a command runs so that
`coral --help` does not import Ray.
"""

from __future__ import annotations

import argparse
import sys

from coral.run.compare import DEFAULT_REPLICATES, DEFAULT_STRATEGIES, parse_strategies


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `submit`, `logs`, `stop` and `jobs` commands."""
    p = sub.add_parser("submit", help="run a config as a Ray job on a cluster")
    p.add_argument("config", help="config file inside this repository (it is uploaded)")
    _address(p)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a key, e.g. search.generations=5 (repeatable)")
    p.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                   help="extra environment variable for the job (repeatable)")
    p.add_argument("--pip", action="append", default=[], metavar="REQUIREMENT",
                   help="runtime_env pip requirement when the cluster image lacks it (repeatable)")
    p.add_argument("--wait", action="store_true", help="stream the logs and wait for the end")
    p.add_argument("--compare", action="store_true",
                   help="run `coral compare` on the cluster instead of one run (job id "
                        "coral-<run>-compare-<n>; resubmit to resume)")
    p.add_argument("--strategies", default=None,
                   help="with --compare: comma-separated strategies (default: "
                        f"{','.join(DEFAULT_STRATEGIES)})")
    p.add_argument("--replicates", type=int, default=None,
                   help=f"with --compare: runs per strategy (default: {DEFAULT_REPLICATES})")
    p.set_defaults(func=_submit)

    p = sub.add_parser("logs", help="print (or --follow) a Ray job's logs")
    p.add_argument("job")
    _address(p)
    p.add_argument("--follow", "-f", action="store_true", help="stream until the job ends")
    p.set_defaults(func=_logs)

    p = sub.add_parser("stop", help="stop a running Ray job (resubmit to resume it)")
    p.add_argument("job")
    _address(p)
    p.set_defaults(func=_stop)

    p = sub.add_parser("jobs", help="list CORAL's Ray jobs on a cluster")
    _address(p)
    p.set_defaults(func=_jobs)


def _address(p: argparse.ArgumentParser) -> None:
    """Add the shared --address option."""
    p.add_argument("--address", default=None,
                   help="Ray dashboard URL, e.g. http://HEAD:8265 (default: $RAY_ADDRESS or "
                        "http://127.0.0.1:8265)")


def _pairs(items: list[str]) -> dict[str, str]:
    """NAME=VALUE strings to a dict."""
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise SystemExit(f"error: --env {item}: expected NAME=VALUE")
        out[name] = value
    return out


def _submit(args: argparse.Namespace) -> int:
    """Submit; print the job id; with --wait follow the logs and exit 0 only on SUCCEEDED."""
    from cluster import jobs
    from coral import config as cfgmod
    from coral.cli.config_cmd import plan_gate

    # The cluster's shape is not known from here: the plan checks memory against
    # ray.gpu_memory_gib and the devices; the driver's check_resources sees the totals.
    if not plan_gate(cfgmod.load(args.config, args.overrides)):
        return 1
    request = jobs.prepare(args.config, args.overrides, _pairs(args.env), args.pip or None,
                           comparison=_comparison(args))
    jc = jobs.client(args.address)
    job_id = jobs.submit(jc, request)
    print(job_id)
    if not args.wait:
        return 0
    jobs.follow_logs(jc, job_id, sys.stdout.write)
    status = jobs.wait(jc, job_id)
    print(f"{job_id}: {status}")
    return 0 if status == "SUCCEEDED" else 1


def _comparison(args: argparse.Namespace):
    """The `--compare` options as a `cluster.jobs.Comparison`, or None for one run."""
    from cluster.jobs import Comparison

    if not args.compare:
        if args.strategies is not None or args.replicates is not None:
            raise SystemExit("error: --strategies and --replicates need --compare")
        return None
    strategies = (DEFAULT_STRATEGIES if args.strategies is None else
                  parse_strategies(args.strategies))
    replicates = DEFAULT_REPLICATES if args.replicates is None else args.replicates
    return Comparison(strategies, replicates)


def _logs(args: argparse.Namespace) -> int:
    """Print the logs so far, or stream them with --follow."""
    from cluster import jobs

    jc = jobs.client(args.address)
    if args.follow:
        jobs.follow_logs(jc, args.job, sys.stdout.write)
    else:
        sys.stdout.write(jc.get_job_logs(args.job))
    return 0


def _stop(args: argparse.Namespace) -> int:
    """Ask Ray to stop the job; its checkpoint stays, so a resubmit resumes."""
    from cluster import jobs

    stopped = jobs.client(args.address).stop_job(args.job)
    print(f"{args.job}: {'stopping' if stopped else 'not running'}")
    return 0


def _jobs(args: argparse.Namespace) -> int:
    """One line per CORAL job: id, status, run name, message."""
    from cluster import jobs

    for row in jobs.coral_jobs(jobs.client(args.address)):
        print(f"{row['id']:<32} {row['status']:<10} {row['run']:<16} {row['message']}")
    return 0
