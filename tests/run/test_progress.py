"""The console of a run: generation lines, heartbeats without a terminal, logs routed to run.log."""

from __future__ import annotations

import io
import logging
import sys
import warnings

from coral.run.console import COMPARE_LOG_FILE, LOG_FILE, WORKER_LOGGER, console, run_log
from coral.run.progress import Progress, generation_line

SUMMARY = {"generation": 0, "seconds": 12.4, "genomes": 4, "best_display": 0.2513,
           "best_fixed": ["gcd", "sieve"], "cache_hit_rate": 0.5}


def test_generation_line_names_the_figures():
    line = generation_line(dict(SUMMARY, samples_spent=16), generations=3)
    assert line.startswith("generation 1/3:")
    for part in ("best fitness 0.251", "fixed 2 (gcd, sieve)", "cache hits 50%",
                 "samples spent 16", "12 s"):
        assert part in line
    # unknown figures are left out, a pass@k is shown first when the summary has it
    bare = generation_line({"generation": 4, "best_fixed": [], "cache_hit_rate": None})
    assert bare == "generation 5:  fixed 0  cache hits -"
    scored = dict(SUMMARY, best_scores={"fixed": 0.375}, k=2)
    assert generation_line(scored).split(":  ")[1].startswith("best pass@2 0.375")
    assert "pass@" not in generation_line(dict(scored, k=None))


def test_no_terminal_gives_lines_and_heartbeats_no_bars():
    out = io.StringIO()
    p = Progress(out=out, generations=2, heartbeat_s=0.0)
    assert not p.bars
    p.add("adapters", 2)
    p.advance("adapters")
    p.tick(0)
    p.generation_done(SUMMARY)
    lines = out.getvalue().splitlines()
    assert lines[0].endswith("generation 1/2: adapters 1/2, generated 0/0, judged 0/0")
    assert lines[1].startswith("generation 1/2:")
    # a heartbeat only after heartbeat_s of silence
    quiet = Progress(out=out, heartbeat_s=3600.0)
    before = out.getvalue()
    quiet.tick(0)
    assert out.getvalue() == before


def test_disabled_progress_prints_nothing():
    out = io.StringIO()
    p = Progress(enabled=False, out=out, heartbeat_s=0.0)
    p.tick(0)
    p.generation_done(SUMMARY)
    p.write("x")
    assert out.getvalue() == ""


def test_console_keeps_coral_lines_and_sends_the_rest_to_run_log(tmp_path):
    out = io.StringIO()
    with console(tmp_path, out=out) as progress:
        progress.write("hello")
        logging.getLogger("coral.run.engine").warning("coral warning")
        logging.getLogger("coral.run.engine").info("coral info")
        logging.getLogger("somelib.loader").warning("library warning")
        print("Loading weights: 100%", file=sys.stderr)
        logging.getLogger(WORKER_LOGGER).warning("(GenerationWorker pid=1) Loading weights")
        logging.getLogger("ray").info("Started a local Ray instance.")
        warnings.warn("is deprecated", FutureWarning)
    shown = out.getvalue()
    assert "hello" in shown and "coral warning" in shown
    for hidden in ("coral info", "library warning", "Loading", "Started a local",
                   "deprecated"):
        assert hidden not in shown
    log = (tmp_path / LOG_FILE).read_text()
    for kept in ("coral warning", "coral info", "library warning", "(GenerationWorker pid=1)",
                 "stderr: Loading weights: 100%",
                 "Started a local Ray", "FutureWarning: is deprecated"):
        assert kept in log
    # the previous logging set-up is back
    assert not hasattr(sys.stderr, "logger")
    assert not any(getattr(h, "baseFilename", "").endswith(LOG_FILE)
                   for h in logging.getLogger().handlers)


def test_quiet_console_still_shows_coral_warnings(tmp_path):
    out = io.StringIO()
    with console(tmp_path, quiet=True, out=out) as progress:
        progress.generation_done(SUMMARY)
        logging.getLogger("cluster.ray_pools").warning("waiting for the autoscaler")
    assert out.getvalue().strip() == "WARNING cluster.ray_pools: waiting for the autoscaler"


def test_compare_console_logs_each_run_to_its_own_run_log(tmp_path):
    """`coral compare`: one console (compare.log), `run_log` adds each run's run.log, and the
    progress starts over for each run."""
    out = io.StringIO()
    with console(tmp_path, out=out, log_file=COMPARE_LOG_FILE, generations=2) as progress:
        for arm in ("nsga2-r0", "random-r0"):
            progress.restart(f"{arm} ", generations=3)
            with run_log(tmp_path / arm):
                progress.add("adapters", 2)
                logging.getLogger("coral.run.engine").info(f"{arm} told")
                logging.getLogger(WORKER_LOGGER).info(f"(GenerationWorker pid=1) {arm}")
            assert progress.counts["adapters"] == 0 and progress.totals["adapters"] == 2
            assert progress.generations == 3
        logging.getLogger("coral.run.compare").info("baselines")
    both = (tmp_path / COMPARE_LOG_FILE).read_text()
    assert all(f"{a} told" in both and f"pid=1) {a}" in both for a in ("nsga2-r0", "random-r0"))
    first = (tmp_path / "nsga2-r0" / LOG_FILE).read_text()
    assert "nsga2-r0 told" in first and "pid=1) nsga2-r0" in first
    assert "random-r0" not in first and "baselines" not in first
    assert out.getvalue() == "" and not (tmp_path / LOG_FILE).exists()
