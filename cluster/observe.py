"""What the driver's Ray offers for watching a run: worker output in run.log, live endpoints.

- `route_driver_logs()`: Ray's logger prints to stderr by itself; its records go through the
  root logger's handlers instead (under `coral run`: run.log).
- `route_worker_output()`: Ray forwards every worker's stdout/stderr to the driver
  (`log_to_driver`) and prints it there, where it cuts through CORAL's progress (model loading
  bars, library warnings). This replaces that printer with one that logs each line, prefixed as
  Ray prefixes it, to the logger `coral.run.console.WORKER_LOGGER` (run.log only) while a
  `coral run` or `coral compare` console holds that logger; other drivers (Modal's entry,
  tests) keep Ray's printing. The output
  also stays in Ray's own per-worker log files (the dashboard's Logs view, `ray logs`).
  Ray has no public switch for where forwarded lines go, so this uses its stream dispatcher
  (`ray._private.ray_logging`); when that is missing, forwarding is turned off instead and the
  lines are only in Ray's files (tests/system/test_console.py notices either way).
- `endpoints()`: the dashboard URL (when one runs) and every node's Prometheus metrics URL,
  written to ``<run_dir>/ray.json`` so `coral status` can point at them while the run lives.
"""

from __future__ import annotations

import logging
from typing import Optional

import ray

from coral.run.console import WORKER_LOGGER

log = logging.getLogger(__name__)

_RAY_PRINTER = "ray_print_logs"     # name of Ray's own handler in the dispatcher
_OURS = "coral_worker_log"


_ray_printer = None   # Ray's own printer, for drivers outside a `coral run` console


def _log_batch(batch: dict) -> None:
    """One batch of forwarded lines of one worker: to run.log while a console (coral.run.console)
    holds the worker logger, else printed the way Ray prints them."""
    logger = logging.getLogger(WORKER_LOGGER)
    if not logger.handlers and _ray_printer is not None:
        _ray_printer(batch)
        return
    who = batch.get("actor_name") or batch.get("task_name") or ""
    prefix = f"({who + ' ' if who else ''}pid={batch.get('pid')})"
    level = logging.WARNING if batch.get("is_err") else logging.INFO
    for line in batch.get("lines", ()):
        logger.log(level, "%s %s", prefix, line.rstrip("\r\n"))


def route_driver_logs() -> None:
    """Let Ray's own driver-side records (start-up notices, warnings) propagate to the root
    logger, whose handlers decide (run.log under `coral run`), instead of Ray's stderr printer.
    Call before `ray.init`: its first warnings are logged while it starts."""
    ray_logger = logging.getLogger("ray")
    ray_logger.handlers = [h for h in ray_logger.handlers
                           if not isinstance(h, logging.StreamHandler)
                           or isinstance(h, logging.FileHandler)]
    ray_logger.propagate = True


def route_worker_output() -> bool:
    """Send forwarded worker output to run.log instead of the terminal; True when routed."""
    try:
        from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher
    except ImportError:  # a Ray without the dispatcher: keep the terminal clean regardless
        log.warning("this Ray cannot route worker output; it stays in Ray's worker log files")
        return False
    global _ray_printer
    for name, handler in list(getattr(dispatcher, "handlers", ())):
        if name == _RAY_PRINTER:
            _ray_printer = handler
    dispatcher.remove_handler(_RAY_PRINTER)
    dispatcher.remove_handler(_OURS)
    dispatcher.add_handler(_OURS, _log_batch)
    return True


def endpoints() -> dict:
    """Dashboard URL (None when there is none) and the nodes' Prometheus metrics URLs."""
    try:  # the URL Ray printed at start; no public getter outside ray.init's return value
        from ray._private.worker import get_dashboard_url
        dashboard: Optional[str] = get_dashboard_url() or None
    except (ImportError, AttributeError, RuntimeError):
        dashboard = None
    if dashboard and "://" not in dashboard:
        dashboard = f"http://{dashboard}"
    metrics = [f"http://{n['NodeManagerAddress']}:{n['MetricsExportPort']}/metrics"
               for n in ray.nodes() if n.get("Alive") and n.get("MetricsExportPort")]
    return {"dashboard": dashboard, "metrics": metrics}
