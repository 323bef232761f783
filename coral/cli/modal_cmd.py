"""`coral modal run CONFIG [--detach]`: run CORAL on Ray inside Modal (cluster/modal_app.py).

Shells out to ``modal run -m cluster.modal_app`` (Modal's own CLI handles login, image builds
and log streaming); needs ``pip install 'coral-evolve[modal]'`` and ``modal setup`` once.
The config is validated here first, with the Volume overrides the Modal function applies.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from coral import config as cfgmod

REPO_ROOT = Path(__file__).resolve().parents[2]


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `modal` command."""
    p = sub.add_parser("modal", help="run on Ray inside Modal GPU containers")
    msub = p.add_subparsers(dest="modal_command", metavar="ACTION", required=True)
    run = msub.add_parser("run", help="run a config on Modal (cluster/modal_app.py)")
    run.add_argument("config", help="config file inside this repository (it is uploaded)")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    run.add_argument("--detach", action="store_true",
                     help="keep running after this command exits (modal run --detach)")
    run.add_argument("--gpu", default=None, help="GPU per container, e.g. H100:8 (CORAL_MODAL_GPU)")
    run.add_argument("--nodes", type=int, default=None,
                     help="containers in the Ray cluster (CORAL_MODAL_NODES, default 1)")
    run.add_argument("--dry-run", action="store_true", help="print the modal command only")
    run.set_defaults(func=_run)


def modal_command(config_rel: str, overrides: list[str], detach: bool) -> list[str]:
    """The ``modal run`` argv that runs `config_rel` with `overrides`."""
    cmd = [sys.executable, "-m", "modal", "run"]
    if detach:
        cmd.append("--detach")
    return cmd + ["-m", "cluster.modal_app", "--config", config_rel,
                  "--overrides-json", json.dumps(list(overrides))]


def _relative(config: str) -> str:
    """The config path relative to the repository (the Modal image's working directory)."""
    path = Path(config).resolve()
    try:
        return path.relative_to(REPO_ROOT).as_posix()
    except ValueError:
        raise cfgmod.ConfigError(f"{config}: must be inside {REPO_ROOT} (it is uploaded to "
                                 "Modal with the repository)") from None


def _run(args: argparse.Namespace) -> int:
    """Validate, then run `modal run`; its exit status is ours."""
    from cluster.definitions import modal_cluster
    from cluster.modal_app import SPEC, modal_overrides, ray_cpus
    from coral.cli.config_cmd import plan_gate

    rel = _relative(args.config)
    nodes = SPEC["nodes"] if args.nodes is None else args.nodes
    cfg = cfgmod.load(args.config, modal_overrides(nodes=nodes) + args.overrides)
    # The containers' shape is known here: a pool that cannot be placed would otherwise wait
    # inside Modal until its 24-hour timeout.
    if not plan_gate(cfg, modal_cluster(args.gpu or SPEC["gpu"], max(nodes, 1),
                                        ray_cpus(SPEC["cpu"]))):
        return 1
    env = dict(os.environ)
    if args.gpu:
        env["CORAL_MODAL_GPU"] = args.gpu
    if args.nodes is not None:
        if args.nodes < 1:
            raise cfgmod.ConfigError(f"--nodes: must be >= 1, got {args.nodes}")
        env["CORAL_MODAL_NODES"] = str(args.nodes)
    cmd = modal_command(rel, args.overrides, args.detach)
    if args.dry_run:
        print(" ".join(cmd))
        return 0
    return subprocess.call(cmd, cwd=REPO_ROOT, env=env)
