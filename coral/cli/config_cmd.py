"""`coral config check FILE...` validates config files; `coral config show` prints one resolved,
or with `--doc` every key with its type, default and meaning."""

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
    check.set_defaults(func=_check)
    show = csub.add_parser("show", help="print a config with every default filled in, or "
                                        "(--doc) every key with its meaning")
    show.add_argument("file", nargs="?", help="config file (optional with --doc)")
    show.add_argument("--doc", action="store_true",
                      help="list every key: type, value (default, or the file's), meaning")
    show.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    show.set_defaults(func=_show)


def _check(args: argparse.Namespace) -> int:
    """Validate each file; print one line per file; non-zero exit if any is invalid."""
    bad = 0
    for path in args.files:
        try:
            cfgmod.load(path, args.overrides)
            print(f"{path}: ok")
        except cfgmod.ConfigError as exc:
            print(str(exc), file=sys.stderr)
            bad += 1
    return 1 if bad else 0


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
