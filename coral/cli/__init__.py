"""The `coral` command. Each subcommand lives in its own module with `register(subparsers)`.

Modules are imported to build `--help`, so they keep heavy imports (torch, ray) inside the
functions that run the command; Ray-using commands delegate to `cluster`/`actors`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys

from coral.config import ConfigError
from coral.judge.quixbugs import DatasetError

# Order is the order shown by `coral --help`.
COMMAND_MODULES = (
    "coral.cli.config_cmd",
    "coral.cli.judge_cmd",
    "coral.cli.model_cmd",
    "coral.cli.data_cmd",
    "coral.cli.run_cmd",
    "coral.cli.status_cmd",
    "coral.cli.cache_cmd",
    "coral.cli.report_cmd",
    "coral.cli.compare_cmd",
    "coral.cli.jobs_cmd",
    "coral.cli.modal_cmd",
)


def build_parser() -> argparse.ArgumentParser:
    """Assemble the parser from every command module that exists."""
    parser = argparse.ArgumentParser(
        prog="coral", description="Evolve LoRA/DoRA adapters and sampling knobs that repair QuixBugs.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # command not built yet in this checkout
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `coral` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:
        return _reader_gone()
    except (ConfigError, DatasetError, FileNotFoundError) as exc:
        # bad input (config, data location, model path): one clear line, no traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _reader_gone() -> int:
    """The reader of stdout left (`coral status RUN | head`): stop quietly, as `cat` does.

    stdout is pointed at /dev/null so the interpreter's final flush does not raise again.
    """
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 128 + signal.SIGPIPE


if __name__ == "__main__":
    sys.exit(main())
