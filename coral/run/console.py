"""Where a run's output goes: CORAL's own lines to the console, everything else to run.log.

`console(run_dir, ...)` is the context of one `coral run` (or Ray job driver):

- ``<run_dir>/run.log`` receives every log record of the driver (CORAL's, Ray's, third-party
  libraries'), Python warnings (``logging.captureWarnings``), whatever is printed to
  ``sys.stderr`` (libraries' own bars and handlers), and the output of the Ray workers, which
  cluster/observe.py hands to the logger `WORKER_LOGGER` instead of printing it;
- the console receives the `Progress` (bars or lines, coral.run.progress) and CORAL's own
  warnings and errors (loggers under coral, cluster and actors; with ``-v`` their INFO too),
  printed through the progress so they do not tear the bars.

The previous logging set-up is restored on exit, so the context nests inside tests and
notebooks. Nothing here imports Ray: its logger is re-pointed by name.

`coral compare` holds one console for the whole comparison (its log is the compare
directory's compare.log) and, around each run, `run_log(run_dir)`: that run's records and its
workers' lines also go to the run's own run.log; the progress restarts for each run.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path
from typing import Callable, Iterator, Optional, TextIO

from coral.run.progress import Progress

LOG_FILE = "run.log"
COMPARE_LOG_FILE = "compare.log"
WORKER_LOGGER = "coral.workers"        # lines printed by Ray workers (file only)
STDERR_LOGGER = "stderr"               # what libraries print to sys.stderr in the driver
OWN_LOGGERS = ("coral", "cluster", "actors")
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _StderrToLog:
    """Stands in for sys.stderr during a run: whatever a library prints there (a progress bar,
    a handler made at import) becomes lines of run.log. Carriage-return redraws keep their
    last state."""

    def __init__(self, logger: logging.Logger, real: TextIO) -> None:
        self.logger, self.real, self._partial = logger, real, ""

    def write(self, text: str) -> int:
        self._partial += text
        *lines, self._partial = self._partial.split("\n")
        for line in lines:
            line = line.rsplit("\r", 1)[-1] if line.rstrip("\r") else ""
            if line.strip():
                self.logger.info("%s", line)
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        """The real stderr's descriptor: crash dumps (faulthandler) still reach the terminal."""
        return self.real.fileno()


class _ConsoleHandler(logging.Handler):
    """CORAL's own records, printed through the progress (above the bars)."""

    def __init__(self, progress: Progress, level: int) -> None:
        super().__init__(level)
        self.progress = progress
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def filter(self, record: logging.LogRecord) -> bool:
        """Only CORAL's loggers, never the workers' output or third-party records."""
        name = record.name
        return (name != WORKER_LOGGER and not name.startswith(WORKER_LOGGER + ".")
                and any(name == own or name.startswith(own + ".") for own in OWN_LOGGERS))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.progress.write(self.format(record))
        except Exception:  # a broken console must not end the run; logging's own contract
            self.handleError(record)


@contextlib.contextmanager
def console(run_dir: str | Path, *, quiet: bool = False, verbose: bool = False,
            generations: Optional[int] = None, pass_at_k: Optional[int] = None,
            out: Optional[TextIO] = None, log_file: str = LOG_FILE
            ) -> Iterator[Progress]:
    """Route logs for one run (or comparison: `log_file`); yield the Progress the engine
    reports to."""
    out = out or sys.stdout
    # quiet: no bars, lines or heartbeats; CORAL's warnings and the final answer still show
    progress = Progress(enabled=not quiet, out=out, generations=generations,
                        pass_at_k=pass_at_k)
    file_handler = _file_handler(Path(run_dir) / log_file, verbose)
    shown = Progress(enabled=True, out=out, bars=False) if quiet else progress
    console_handler = _ConsoleHandler(shown, logging.INFO if verbose else logging.WARNING)
    restore = _route_logs(file_handler, console_handler)
    saved_stderr = sys.stderr
    sys.stderr = _StderrToLog(logging.getLogger(STDERR_LOGGER), saved_stderr)
    try:
        yield progress
    finally:
        sys.stderr = saved_stderr
        progress.close()
        restore()
        file_handler.close()


@contextlib.contextmanager
def run_log(run_dir: str | Path, verbose: bool = False) -> Iterator[None]:
    """Inside a console: every record and worker line also goes to ``<run_dir>/run.log``
    while the context lasts (one run of `coral compare`)."""
    handler = _file_handler(Path(run_dir) / LOG_FILE, verbose)
    loggers = (logging.getLogger(), logging.getLogger(WORKER_LOGGER))
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
        handler.close()


def _file_handler(path: Path, verbose: bool) -> logging.FileHandler:
    """A handler appending to `path` (its folder made), INFO and up (DEBUG with -v)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter(_FORMAT))
    handler.setLevel(logging.DEBUG if verbose else logging.INFO)
    return handler


def _route_logs(file_handler: logging.Handler,
                console_handler: logging.Handler) -> Callable[[], None]:
    """Send every record to run.log and CORAL's warnings to the console; return the undo."""
    root, ray_logger = logging.getLogger(), logging.getLogger("ray")
    workers = logging.getLogger(WORKER_LOGGER)
    saved = (root.level, list(root.handlers), list(ray_logger.handlers), ray_logger.propagate)
    # Workers' lines: run.log only (its handler here also tells cluster/observe.py to log them).
    workers.addHandler(file_handler)
    workers.propagate = False
    # Handlers that print to the terminal are replaced; file or test handlers stay.
    root.handlers = [h for h in root.handlers if not _prints_to_terminal(h)]
    root.addHandler(file_handler)
    root.addHandler(console_handler)
    root.setLevel(min(file_handler.level, console_handler.level))
    # Ray's logger prints to stderr by itself; send its records through ours instead.
    ray_logger.handlers = [h for h in ray_logger.handlers if not _prints_to_terminal(h)]
    ray_logger.propagate = True
    logging.captureWarnings(True)

    def restore() -> None:
        logging.captureWarnings(False)
        root.removeHandler(file_handler)
        root.removeHandler(console_handler)
        workers.removeHandler(file_handler)
        workers.propagate = True
        root.setLevel(saved[0])
        root.handlers = saved[1]
        ray_logger.handlers, ray_logger.propagate = saved[2], saved[3]

    return restore


def _prints_to_terminal(handler: logging.Handler) -> bool:
    """A StreamHandler on stdout/stderr (basicConfig's, Ray's), not a file or a test capture."""
    return (isinstance(handler, logging.StreamHandler)
            and not isinstance(handler, logging.FileHandler)
            and getattr(handler, "stream", None) in (sys.stdout, sys.stderr,
                                                    sys.__stdout__, sys.__stderr__))
