"""`coral data path` says which QuixBugs checkout coral uses; `coral data pull` prepares one.

QuixBugs is looked for in one order everywhere (coral.config.judge.QUIXBUGS_SEARCH_ORDER):
the config, $CORAL_QUIXBUGS, the copy `coral data pull` made, a sibling ../shared/quixbugs.
The make targets call `coral data pull` before they run anything, so `make run` and
`coral run configs/local.yaml` read the same data with no environment variable set.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `data` command."""
    p = sub.add_parser("data", help="locate or prepare the QuixBugs checkout")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    where = dsub.add_parser("path", help="print the QuixBugs checkout coral uses, or every "
                                         "place it looked")
    where.add_argument("--config", help="a config whose dataset.quixbugs comes first")
    where.set_defaults(func=_path)
    pull = dsub.add_parser(
        "pull", help="make QuixBugs available: nothing when it is found already, else copy "
                     "--from PATH or clone upstream into <$CORAL_CACHE or ~/.cache/coral>/quixbugs")
    pull.add_argument("--from", dest="source", metavar="PATH",
                      help="a QuixBugs checkout to copy (works offline)")
    pull.add_argument("--link", action="store_true",
                      help="with --from: link to the checkout instead of copying it")
    pull.set_defaults(func=_pull)


def _path(args: argparse.Namespace) -> int:
    """Print the resolved checkout (DatasetError, naming every place, when there is none)."""
    from coral.judge.quixbugs import resolve_path

    configured = None
    if args.config:
        from coral import config as cfgmod
        configured = cfgmod.load(args.config).dataset.quixbugs
    print(resolve_path(configured))
    return 0


def _pull(args: argparse.Namespace) -> int:
    """Copy/link --from PATH, or keep what is found, or clone upstream; print where it is."""
    from coral.judge.quixbugs import DatasetNotFound, prepared_path, resolve_path

    target = prepared_path()
    if args.source:
        source = resolve_path(args.source)   # a complete checkout, or a DatasetError
        if source == target.resolve():
            print(f"QuixBugs: {target} (already there)")
            return 0
        _install(target, lambda tmp: _copy(source, tmp, args.link))
        print(f"QuixBugs: {target} ({'linked to' if args.link else 'copied from'} {source})")
        return 0
    try:
        found = resolve_path(None)
    except DatasetNotFound:   # a wrong dataset setting is an error, not a reason to clone
        found = None
    if found is not None:
        print(f"QuixBugs: {found} (found; nothing to prepare)")
        return 0
    _install(target, _clone)
    print(f"QuixBugs: {target} (cloned)")
    return 0


def _install(target: Path, make) -> None:
    """Build the checkout beside `target` with `make(tmp)`, then put it in place, so an
    interrupted pull never leaves a half-copied checkout where coral looks."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".quixbugs-") as tmp:
        staged = Path(tmp) / "quixbugs"
        make(staged)
        if target.is_symlink() or target.is_file():
            target.unlink()
        elif target.exists():
            shutil.rmtree(target)
        staged.rename(target)


def _copy(source: Path, staged: Path, link: bool) -> None:
    """A copy of the checkout without its git history, or a link to it."""
    if link:
        staged.symlink_to(source, target_is_directory=True)
    else:
        shutil.copytree(source, staged, ignore=shutil.ignore_patterns(".git"))


def _clone(staged: Path) -> None:
    """`git clone --depth 1` of upstream; a DatasetError saying how to work offline."""
    from coral.judge.quixbugs import UPSTREAM, DatasetError

    try:
        subprocess.run(["git", "clone", "-q", "--depth", "1", UPSTREAM, str(staged)],
                       check=True, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.SubprocessError) as exc:
        detail = (getattr(exc, "stderr", None) or str(exc)).strip().splitlines()
        raise DatasetError(f"could not clone {UPSTREAM} ({detail[-1] if detail else exc}); "
                           "with a QuixBugs checkout at hand: coral data pull --from PATH"
                           ) from None
