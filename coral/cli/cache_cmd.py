"""`coral cache ls | gc`: see and prune the adapter store (coral.adapters.gc has the policy).

The store is the one a config uses (`--config`, default: the built-in defaults, i.e.
$CORAL_CACHE/adapters or ~/.cache/coral/adapters) or a directory given with `--store`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `cache` command with its `ls` and `gc` subcommands."""
    p = sub.add_parser("cache", help="list (ls) or prune (gc) the stored adapters")
    inner = p.add_subparsers(dest="cache_command", metavar="ls|gc", required=True)

    ls = inner.add_parser("ls", help="stored adapters, least recently used first")
    _store_args(ls)
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    ls.set_defaults(func=_ls)

    gc = inner.add_parser("gc", help="remove least recently used adapters (never one a run "
                                     "that is not finished references)")
    _store_args(gc)
    gc.add_argument("--max-gb", type=float, default=None, metavar="N",
                    help="remove least recently used adapters until the store holds at most "
                         "N GiB")
    gc.add_argument("--older-than", type=float, default=None, metavar="DAYS",
                    help="remove adapters not used for DAYS days")
    gc.add_argument("--dry-run", action="store_true", help="only say what would be removed")
    gc.set_defaults(func=_gc)


def _store_args(p: argparse.ArgumentParser) -> None:
    """--store / --config: which store."""
    p.add_argument("--store", default=None, metavar="DIR", help="adapter store directory")
    p.add_argument("--config", default=None, metavar="CONFIG",
                   help="use this config's store (storage.adapters / model.cache_dir)")


def _root(args: argparse.Namespace) -> Path:
    """The store directory the arguments name."""
    if args.store:
        return Path(args.store).expanduser()
    from coral import config as cfgmod
    from coral.adapters.store import default_root

    cfg = cfgmod.load(args.config) if args.config else cfgmod.from_dict({})
    return default_root(cfg)


def _mib(n: int) -> str:
    """Bytes as GiB, MiB or KiB with one decimal."""
    for unit, size in (("GiB", 2 ** 30), ("MiB", 2 ** 20)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n / 1024:.1f} KiB"


def _when(t: float, now: float) -> str:
    """A time as date and how long ago."""
    ago = now - t
    unit = (f"{ago / 86400:.1f} d" if ago >= 86400 else f"{ago / 3600:.1f} h" if ago >= 3600
            else f"{ago / 60:.0f} min")
    return f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(t))} ({unit} ago)"


def _genes(g: dict) -> str:
    """Heavy genes in one short string."""
    mods = ",".join(g.get("target_modules", []) or [])
    return (f"r={g.get('r')} alpha={g.get('lora_alpha')} dropout={g.get('lora_dropout')} "
            f"modules={mods} dora={g.get('use_dora')}")


def _ls(args: argparse.Namespace) -> int:
    """Print the inventory."""
    from coral.adapters.gc import inventory

    root = _root(args)
    if not root.is_dir():
        print(f"no adapter store at {root}")
        return 0
    adapters = inventory(root)
    if args.json:
        print(json.dumps({"store": str(root), "adapters": [a.to_dict() for a in adapters]},
                         indent=1))
        return 0
    now = time.time()
    print(f"store {root}: {len(adapters)} adapter(s), "
          f"{_mib(sum(a.size for a in adapters))} (least recently used first)")
    for a in adapters:
        runs = ", ".join(a.runs) or "-"
        print(f"{a.key[:16]}  {_mib(a.size):>10}  {a.base_model}  {_genes(a.genes)}\n"
              f"    created {_when(a.created, now)}, last used {_when(a.last_used, now)}; "
              f"runs: {runs}{'  [in use by an unfinished run]' if a.protected else ''}")
    return 0


def _gc(args: argparse.Namespace) -> int:
    """Apply (or with --dry-run show) the pruning policy."""
    from coral.adapters.gc import collect

    if args.max_gb is None and args.older_than is None:
        raise SystemExit("error: coral cache gc needs --max-gb N and/or --older-than DAYS")
    root = _root(args)
    if not root.is_dir():
        print(f"no adapter store at {root}")
        return 0
    plan = collect(root, max_gb=args.max_gb, older_than_days=args.older_than,
                   dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    for a in plan.remove:
        print(f"{verb} {a.key[:16]}  {_mib(a.size)}  last used "
              f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(a.last_used))}")
    print(f"{verb} {len(plan.remove)} adapter(s), {_mib(plan.total - plan.after)}; store "
          f"{_mib(plan.total)} -> {_mib(plan.after)}; {len(plan.protected)} kept for "
          f"unfinished runs")
    if args.max_gb is not None and plan.after > args.max_gb * 2 ** 30:
        print(f"note: still above {args.max_gb} GiB: the rest is in use by unfinished runs "
              "(finish or delete them first)")
    return 0
