"""`coral config check FILE...` validates config files (with `--plan`, also what every actor
takes against the card and the cluster: coral.run.plan); `coral config show` prints one
resolved, or with `--doc` every key with its type, default and meaning."""

from __future__ import annotations

import argparse
import json
import sys

import yaml

from coral import config as cfgmod


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `config` command."""
    p = sub.add_parser("config", help="validate or show configuration files")
    csub = p.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    check = csub.add_parser("check", help="validate one or more config files")
    check.add_argument("files", nargs="+")
    check.add_argument("--set", dest="overrides", action="append", default=[],
                       metavar="KEY=VALUE", help="override a key, e.g. search.generations=5")
    check.add_argument("--plan", action="store_true",
                       help="also print the plan: every actor's CPUs, GPUs and estimated GPU "
                            "memory against the card and the cluster (exit 1 if it does not fit)")
    check.add_argument("--json", action="store_true", help="with --plan: the plan as JSON")
    check.add_argument("--cluster", default=None, metavar="FILE",
                       help="with --plan: the cluster definition to plan against "
                            "(cluster/ray-aws.yaml, cluster/kuberay-rayjob.yaml, modal)")
    check.set_defaults(func=_check)
    show = csub.add_parser("show", help="print a config with every default filled in, or "
                                        "(--doc) every key with its meaning")
    show.add_argument("file", nargs="?", help="config file (optional with --doc)")
    show.add_argument("--doc", action="store_true",
                      help="list every key: type, value (default, or the file's), meaning")
    show.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    show.set_defaults(func=_show)


def _check(args: argparse.Namespace) -> int:
    """Validate each file; print one line per file (or its plan); non-zero exit if any is
    invalid or, with --plan, does not fit."""
    from coral.search.strategies import check_strategy

    bad = 0
    cluster = None
    if args.plan and args.cluster:
        from cluster.definitions import read_cluster
        cluster = read_cluster(args.cluster)
    for path in args.files:
        try:
            cfg = cfgmod.load(path, args.overrides)
            check_strategy(cfg)
        except cfgmod.ConfigError as exc:
            print(str(exc), file=sys.stderr)
            bad += 1
            continue
        if not args.plan:
            print(f"{path}: ok")
            continue
        from coral.run.plan import make_plan

        plan = make_plan(cfg, cluster)
        print(json.dumps(plan, indent=2) if args.json else "\n".join(summary_lines(plan)))
        for line in plan["problems"]:
            print(f"{path}: {line}", file=sys.stderr)
        bad += not plan["fits"]
    return 1 if bad else 0


def plan_gate(cfg: cfgmod.Config, cluster=None) -> bool:
    """The plan's check before a start (`coral run`, `submit`, `modal run`): True when it
    fits; otherwise one line per problem on stderr."""
    from coral.run.plan import make_plan

    plan = make_plan(cfg, cluster)
    for line in plan["problems"]:
        print(f"error: {line}", file=sys.stderr)
    if not plan["fits"]:
        print(f"error: {cfg.source} does not fit (details: coral config check {cfg.source} "
              "--plan)", file=sys.stderr)
    return plan["fits"]


def _show(args: argparse.Namespace) -> int:
    """Print the fully resolved config as YAML, or its keys with their docs."""
    if args.file is None and not args.doc:
        print("error: give a config file (or --doc for the keys and their defaults)",
              file=sys.stderr)
        return 2
    cfg = cfgmod.load(args.file, args.overrides) if args.file else cfgmod.from_dict(
        cfgmod.apply_overrides({}, args.overrides), "<defaults>")
    if not args.doc:
        print(yaml.safe_dump(cfgmod.to_dict(cfg), sort_keys=False), end="")
        return 0
    rows = list(cfgmod.describe(cfg))
    width = max(len(key) for key, *_ in rows)
    for key, type_name, value, doc in rows:
        print(f"{key:<{width}}  {doc}\n{'':<{width}}  {type_name} = {json.dumps(value)}")
    return 0


def summary_lines(plan: dict) -> list[str]:
    """The plan for people: one line per pool and the totals."""
    lines = [f"{plan['config']}: model {plan['model']['shape'] or plan['model']['base']}; "
             f"card {plan['card_gib']} GiB ({plan['card_source']})"]
    for pool in dict.fromkeys(a["pool"] for a in plan["actors"]):
        group = [a for a in plan["actors"] if a["pool"] == pool]
        a = group[0]
        mem = "" if a["gpu_memory_gib"] is None else \
            f", ~{a['gpu_memory_gib']:g} of {a['budget_gib']} GiB GPU memory"
        lines.append(f"  {pool}: {len(group)} x ({a['num_cpus']:g} CPU, {a['num_gpus']:g} GPU"
                     f"{mem})")
    have = plan["cluster"]
    lines.append(f"  needs {plan['needs']['cpus']:g} CPUs, {plan['needs']['gpus']:g} GPUs"
                 + ("" if have is None else f"; {have['source']} has {have['cpus']:g} CPUs, "
                                            f"{have['gpus']:g} GPUs"))
    lines += [f"  note: {n}" for n in plan["notes"]]
    lines.append("fits" if plan["fits"] else "does NOT fit")
    return lines
