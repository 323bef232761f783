"""`coral run` as a user sees it in a terminal: CORAL's lines only, a final answer at the end.

The smoke config runs as a subprocess on a pseudo-terminal (so tqdm draws its bars and every
library believes it talks to a person); the captured screen must hold the generation lines and
the final summary and nothing from Ray's workers or third-party warnings, which must be in the
run directory's run.log instead. While it runs, the metrics CORAL's actors export are read
back from the run's own local Ray (its Prometheus endpoint, named in ray.json).
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


REPO = Path(__file__).resolve().parents[2]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# What must never reach the console: Ray's forwarded worker lines "(Actor pid=N)", Python
# warnings, model-loading bars, Ray's own driver notices and its core's C++ log lines
# ("[2026-.. E 123 123] core_worker.cc:..", e.g. the restartable-actor warning).
LEAKS = re.compile(r"\(\w+ pid=\d+|pid=\d+\)|Warning|WARNING|warnings\.warn|Loading weights|"
                   r"worker\.py:\d+|INFO |\.cc:\d+|^\[\d{4}-\d\d-\d\d [\d:,]+ [DIWEF] \d+")


def _screen(raw: bytes) -> list[str]:
    """The lines a terminal would show: ANSI codes removed, carriage-return redraws resolved."""
    text = ANSI.sub("", raw.decode("utf-8", "replace"))
    return [line.split("\r")[-1] if line.split("\r")[-1].strip() else line.replace("\r", "")
            for line in text.split("\n")]


def _metric_lines(url: str) -> list[str]:
    """CORAL's samples on a Prometheus endpoint (empty when it is not up yet)."""
    try:
        body = urllib.request.urlopen(url, timeout=5).read().decode()
    except OSError:
        return []
    return [line for line in body.splitlines() if line.startswith("ray_coral_")]


def _series(lines: list[str]) -> set[str]:
    """'name{tag="v"}' of each sample, Ray's own tags (node, worker, ...) dropped."""
    out = set()
    for line in lines:
        name, _, rest = line.partition("{")
        ours = [t for t in rest.split("}")[0].split(",")
                if t.split("=")[0] in ("pool", "status", "outcome")]
        out.add(name + ("{" + ",".join(sorted(ours)) + "}" if ours else ""))
    return out


def _run_on_pty(args: list[str], env: dict, run_dir: Path, timeout: float = 400
                ) -> tuple[int, bytes, set[str], str | None]:
    """Run on a 120x40 pty; return (exit code, everything it printed, metric series seen while
    it ran, `coral status` output taken meanwhile)."""
    master, slave = pty.openpty()
    import fcntl
    import termios
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=REPO,
                            close_fds=True)
    os.close(slave)
    out, metrics, deadline = bytearray(), set(), time.monotonic() + timeout
    status = None
    next_poll = 0.0
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                out += chunk
            if time.monotonic() >= next_poll:  # the run's own Ray, while it lives
                next_poll = time.monotonic() + 1.0
                doc = json.loads((run_dir / "ray.json").read_text()) \
                    if (run_dir / "ray.json").exists() else {}
                for url in doc.get("metrics", []):
                    metrics |= _series(_metric_lines(url))
                if metrics and status is None:   # `coral status` points at the live Ray
                    status = subprocess.run([sys.executable, "-m", "coral", "status",
                                             str(run_dir)], capture_output=True, text=True,
                                            cwd=REPO, env=env, timeout=120).stdout
        code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    return code, bytes(out), metrics, status


def test_coral_run_on_a_terminal_shows_progress_and_answer_only(tmp_path, quixbugs_dir):
    run_dir = tmp_path / "runs" / "smoke"
    # Metrics leave the workers every second instead of every ten (a Ray system setting).
    env = dict(os.environ, CORAL_QUIXBUGS=str(quixbugs_dir), RAY_metrics_report_interval_ms="1000",
               TERM="xterm")
    code, raw, metrics, status = _run_on_pty(
        [sys.executable, "-m", "coral", "run", "configs/smoke.yaml", "--no-resume",
         "--set", f"run.runs_dir={tmp_path}/runs",
         "--set", f"storage.adapters={tmp_path}/adapters"], env, run_dir)
    screen = _screen(raw)
    text = "\n".join(screen)
    assert code == 0, text[-3000:]

    leaks = [line for line in screen if LEAKS.search(line)]
    assert leaks == [], "\n".join(leaks)
    assert "generation 1/2:" in text and "generation 2/2:" in text
    # the final answer: the status summary, the best genome, held-out, baseline, report path
    for expected in ("run      ", "cache    ", "best genome ", "held-out: ", "baseline",
                     f"report: {run_dir / 'report.md'}"):
        assert expected in text, expected
    assert text.rstrip().splitlines()[-1].startswith("report: ")

    log = (run_dir / "run.log").read_text()
    assert re.search(r"\((GenerationWorker|TrainingWorker) pid=\d+\)", log)   # routed, not lost
    assert "Started a local Ray instance" in log

    # Ray-native metrics, read back from the run's Prometheus endpoint while it ran
    for series in ('ray_coral_samples_generated_total', 'ray_coral_adapter_trainings_total',
                   'ray_coral_cache_lookups_total{outcome="miss"}',
                   'ray_coral_pool_busy_seconds_total{pool="generation"}',
                   'ray_coral_pool_busy_seconds_total{pool="judge"}',
                   'ray_coral_pool_busy_seconds_total{pool="training"}',
                   'ray_coral_pool_queue_depth{pool="generation"}'):
        assert series in metrics, (series, sorted(metrics))
    assert any(m.startswith("ray_coral_candidates_judged_total{status=") for m in metrics)
    assert status and "metrics  http://" in status, status


def test_coral_compare_on_a_terminal_shows_a_line_per_run_and_the_summary(tmp_path,
                                                                         quixbugs_dir):
    """`coral compare` on the run console: nothing from Ray or its workers on the screen,
    one line per finished run, the summary last; Ray's and the workers' output in
    compare.log and each run's run.log."""
    root = tmp_path / "runs" / "smoke-compare"
    env = dict(os.environ, CORAL_QUIXBUGS=str(quixbugs_dir), TERM="xterm")
    code, raw, _, _ = _run_on_pty(
        [sys.executable, "-m", "coral", "compare", "configs/smoke.yaml", "--replicates", "2",
         "--set", f"run.runs_dir={tmp_path}/runs",
         "--set", f"storage.adapters={tmp_path}/adapters"], env, root / "none", timeout=900)
    screen = _screen(raw)
    text = "\n".join(screen)
    assert code == 0, text[-3000:]
    leaks = [line for line in screen if LEAKS.search(line)]
    assert leaks == [], "\n".join(leaks)
    assert text.startswith("coral compare smoke: nsga2, random x 2 replicate(s)"), text[:300]
    for strategy in ("nsga2", "random"):
        for r in (0, 1):
            assert re.search(rf"^{strategy} replicate {r}: \d+ samples, held-out pass@1 "
                             r"\d\.\d{3} \(fixed \d+\)$", text, re.M), (strategy, r, text)
    assert "generation 2/2:" in text                     # the runs' own lines and bars
    assert text.rstrip().splitlines()[-1] == f"report:  {root / 'compare.md'}"
    log = (root / "compare.log").read_text()
    assert "Started a local Ray instance" in log
    assert re.search(r"\((GenerationWorker|TrainingWorker) pid=\d+\)", log)
    # each run's own records in its run.log; the first run's also has the workers' start-up
    assert re.search(r"\(\w+ pid=\d+\)", (root / "nsga2-r0" / "run.log").read_text())
    for arm in ("nsga2-r0", "random-r0", "nsga2-r1", "random-r1"):
        assert "generation 1 told" in (root / arm / "run.log").read_text(), arm
