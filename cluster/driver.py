"""The driver of one CORAL run: `python -m cluster.driver CONFIG [--set K=V ...] [--no-resume]`.

`run(cfg, resume=True)` connects to Ray per `cfg.ray.address` (null: a local
`ray.init(num_cpus=cfg.ray.num_cpus)`; "auto": the cluster this process runs in, as a Ray
job's driver does), builds the pools, runs `coral.run.engine.Engine` in the run directory
`<run.runs_dir>/<run.name>` (resuming from its checkpoint by default), writes the report and
returns the run directory. `coral run` and Ray jobs (cluster/jobs.py) both come through here.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from pathlib import Path
from typing import Iterator, Optional

from coral import config as cfgmod

log = logging.getLogger(__name__)


@contextlib.contextmanager
def open_pools(cfg: cfgmod.Config, problems, in_process: bool = False) -> Iterator:
    """The pools of a config, closed (and a Ray this call started shut down) on exit.

    `in_process` runs the pools' plain classes in this process instead of Ray actors (same
    results, no parallelism). `coral compare` holds one set across all its runs.
    """
    if in_process:
        from coral.run.pools import in_process_pools
        pools, started = in_process_pools(cfg, problems), False
    else:
        from cluster.local import connect
        from cluster.ray_pools import RayPools
        started = connect(cfg.ray)
        pools = RayPools(cfg, problems)
    try:
        yield pools
    finally:
        pools.close()
        if started:
            from cluster.local import disconnect
            disconnect(started)


def run(cfg: cfgmod.Config, resume: bool = True, *, quiet: Optional[bool] = None,
        in_process: bool = False, report: bool = True, pools=None, progress=None) -> Path:
    """Run (or resume) a whole search; return the run directory.

    `in_process` runs the pools' plain classes in this process instead of Ray actors (same
    results, no parallelism); `pools` injects ready-made pools (tests); `progress` is the
    console's (coral.run.console), else one is made per `quiet`.
    """
    # Imported here so `--help` and the job-submission contract need no model stack.
    from coral.run.engine import Engine, problems_for
    from coral.model.loading import resolve
    from coral.run.progress import Progress
    from coral.run.rundir import RunDir, run_path
    from coral.model.training import data_version

    train, held = problems_for(cfg)
    base_model = resolve(cfg.model).name
    version = data_version(cfg.training)  # part of every adapter key
    rundir = RunDir(run_path(cfg)).create()
    from coral.adapters.gc import register_run
    from coral.adapters.store import store_from_config
    register_run(store_from_config(cfg).root, rundir.path)  # its adapters are safe from gc
    if progress is None:
        progress = Progress(enabled=None if quiet is None else not quiet)
    with contextlib.ExitStack() as stack:
        if pools is None:
            pools = stack.enter_context(open_pools(cfg, (*train, *held), in_process))
            if not in_process:
                from cluster.observe import endpoints
                rundir.write_json("ray.json", endpoints())   # for `coral status`
        # `coral status` tells running from interrupted by it; `with` stops it on any exit.
        stack.enter_context(rundir.heartbeat())
        Engine(cfg, pools, rundir, train, held, base_model, version, progress).run(resume)
    if report:
        from coral.run.report import write_report
        write_report(rundir.path)
    return rundir.path


def main(argv: Optional[list[str]] = None) -> int:
    """Command-line entry point (what Ray jobs run)."""
    parser = argparse.ArgumentParser(prog="python -m cluster.driver", description=__doc__)
    parser.add_argument("config")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE")
    parser.add_argument("--no-resume", dest="resume", action="store_false")
    parser.add_argument("--in-process", action="store_true",
                        help="run the pools in this process instead of Ray actors")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = cfgmod.load(args.config, args.overrides)
        from coral.search.strategies import check_strategy

        check_strategy(cfg)
    except cfgmod.ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return launch(cfg, resume=args.resume, quiet=args.quiet, in_process=args.in_process)


def launch(cfg: cfgmod.Config, resume: bool, quiet: bool, in_process: bool,
           verbose: bool = False) -> int:
    """Run with a clean console (coral.run.console) and print the final answer; exit status 2
    when resume is refused."""
    from coral.run.answer import final_answer
    from coral.run.console import LOG_FILE, console
    from coral.run.engine import ResumeRefused
    from coral.run.rundir import run_path

    where = run_path(cfg)
    with console(where, quiet=quiet, verbose=verbose, generations=cfg.search.generations,
                 pass_at_k=cfg.search.pass_at_k) as progress:
        progress.write(f"coral run {cfg.run.name}: {cfg.search.generations} generation(s) of "
                       f"{cfg.search.population_size} genomes; details in {where / LOG_FILE}")
        try:
            path = run(cfg, resume=resume, in_process=in_process, progress=progress)
        except ResumeRefused as exc:
            path, refused = None, exc
    if path is None:  # printed here: inside console() stderr goes to run.log
        print(f"error: {refused}", file=sys.stderr)
        return 2
    print(final_answer(path), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
