"""A truthful `coral status`: the driver's heartbeat in live.json tells running from interrupted,
and the CLI's output survives a reader that goes away (`coral status RUN | head`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from coral.run.rundir import LIVE_FILE, RunDir, driver_identity, driver_seen

REPO = Path(__file__).resolve().parents[2]


def _dead_identity() -> dict:
    """The identity a driver had before it was killed: a process that has exited."""
    child = subprocess.Popen([sys.executable, "-c",
                              "import json; from coral.run.rundir import driver_identity; "
                              "print(json.dumps(driver_identity()))"],
                             stdout=subprocess.PIPE, cwd=REPO, text=True)
    out, _ = child.communicate(timeout=60)
    return json.loads(out)


def _run_dir(tmp_path: Path, live: dict | None, generations: int = 2) -> RunDir:
    """A run directory as a driver leaves it mid-run: config, events, maybe live.json."""
    from coral import config as cfgmod

    rd = RunDir(tmp_path / "runs" / "r").create()
    rd.write_config(cfgmod.load(REPO / "configs" / "smoke.yaml",
                                [f"run.runs_dir={tmp_path / 'runs'}", "run.name=r"]))
    log = rd.open_events()
    log.write("run_started", generation=0)
    for g in range(generations):
        log.write("candidate_judged", generation=g, genome_id=f"g{g}", problem="gcd",
                  status="OK", passed=1, total=1, scores={}, seconds=0.1)
    log.close()
    if live is not None:
        (rd.path / LIVE_FILE).write_text(json.dumps(live))
    return rd


def _status(rd: RunDir, *args: str, **kw) -> subprocess.CompletedProcess:
    """`python -m coral status RUN ...` as a user runs it."""
    return subprocess.run([sys.executable, "-m", "coral", "status", str(rd.path), *args],
                          cwd=REPO, capture_output=True, text=True, timeout=120, **kw)


def test_heartbeat_keeps_live_json_fresh_and_says_who_writes_it(tmp_path):
    rd = RunDir(tmp_path / "r")
    beat = rd.heartbeat(every_s=0.05)
    try:
        first = json.loads((rd.path / LIVE_FILE).read_text())
        rd.write_live({"queued": 3, "in_flight": {"adapter": 1}})
        time.sleep(0.3)
        later = json.loads((rd.path / LIVE_FILE).read_text())
    finally:
        beat.stop()
    assert later["heartbeat"] > first["heartbeat"]
    assert later["queued"] == 3                     # beats keep the engine's queue state
    assert later["driver"] == driver_identity()
    assert driver_seen(later)[0]
    rd.clear_live()                                 # the run ended: no heartbeat brings it back
    rd.beat()
    assert not (rd.path / LIVE_FILE).exists()


def test_a_killed_driver_is_interrupted_at_once_and_a_foreign_one_when_stale(tmp_path):
    now = time.time()
    dead = {"heartbeat": now - 2, "driver": _dead_identity()}
    alive, age = driver_seen(dead, now)
    assert not alive and 1.5 < age < 2.5            # same machine: its pid answers at once
    foreign = {"heartbeat": now - 5, "driver": {"host": "elsewhere", "pid": 1}}
    assert driver_seen(foreign, now)[0]             # another host: trusted while fresh
    assert not driver_seen(dict(foreign, heartbeat=now - 120), now)[0]
    assert driver_seen(None) == (False, None)


def test_status_says_interrupted_and_how_to_resume(tmp_path):
    rd = _run_dir(tmp_path, {"heartbeat": time.time() - 200, "time": time.time() - 200,
                             "queued": 1, "in_flight": {}, "driver": _dead_identity()})
    res = _status(rd)
    assert res.returncode == 0, res.stderr
    first = res.stdout.splitlines()[0]
    assert "interrupted (last seen 3 min ago)" in first
    assert f"`coral run {rd.path / 'config.yaml'}` resumes it" in first
    doc = json.loads(_status(rd, "--json").stdout)
    assert doc["state"] == "interrupted" and doc["queues"] is None
    assert 190 < doc["last_seen_seconds"] < 300


def test_status_of_a_live_driver_says_running(tmp_path):
    rd = _run_dir(tmp_path, None)
    with rd.heartbeat(every_s=0.1):
        rd.write_live({"queued": 2, "in_flight": {"adapter": 1, "generate": 0, "judge": 0}})
        doc = json.loads(_status(rd, "--json").stdout)
    assert doc["state"] == "running" and doc["resume"] is None
    assert doc["queues"]["queued"] == 2


def test_status_survives_a_closed_pipe(tmp_path):
    """The reader closes the pipe before `coral status` writes: no traceback, SIGPIPE's code."""
    rd = _run_dir(tmp_path, None, generations=50)
    proc = subprocess.Popen([sys.executable, "-m", "coral", "status", str(rd.path), "--json"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()                             # `| head` that already has its lines
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141, err
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    # and through a real shell pipe, the first line arrives intact
    out = subprocess.run(f"{sys.executable} -m coral status {rd.path} | head -n 1", shell=True,
                         cwd=REPO, capture_output=True, text=True, timeout=120,
                         env=dict(os.environ))
    assert out.stdout.startswith("run ") and "Traceback" not in out.stderr, out.stderr
