"""No orphans: `coral run` killed with SIGKILL leaves no process of its private Ray (GCS,
raylet, agents, workers) nor of its sandboxes, and `coral status` calls the run interrupted.

Processes are recognised by a marker variable in their environment that only this test's
driver (and so its descendants) carries; other runs on the machine are never looked at.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from cluster.reaper import _environ_has, _parents, process_start

REPO = Path(__file__).resolve().parents[2]
MARK = "CORAL_TEST_ORPHANS"


def _ours(marker: bytes) -> dict[int, str]:
    """pid -> command line of every process carrying `marker`, and of their descendants
    (a sandbox under bubblewrap may start with a cleared environment)."""
    parents = _parents()
    found = {pid for pid in parents if _environ_has(pid, marker)}
    while more := {p for p, pp in parents.items() if pp in found} - found:
        found |= more
    out = {}
    for pid in found:
        try:
            out[pid] = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
    return out


def _wait_for(predicate, seconds: float, what: str, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"driver exited {proc.returncode} before {what}")
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def test_sigkilled_driver_leaves_no_process_behind(tmp_path, quixbugs_dir):
    value = uuid.uuid4().hex
    marker = f"{MARK}={value}".encode()
    env = dict(os.environ, CORAL_QUIXBUGS=str(quixbugs_dir), **{MARK: value})
    env.pop("RAY_ADDRESS", None)
    runs = tmp_path / "runs"
    cmd = [sys.executable, "-m", "coral", "run", "configs/smoke.yaml", "-q",
           "--set", f"run.runs_dir={runs}", "--set", f"storage.adapters={tmp_path / 'a'}",
           "--set", "search.generations=5"]
    log = open(tmp_path / "driver.log", "wb")
    driver = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        events = runs / "smoke" / "events.jsonl"
        # mid-run: a candidate judged, so every pool (and the sandboxes) is up
        _wait_for(lambda: events.exists() and '"candidate_judged"' in events.read_text(), 400,
                  "the first verdict", driver)
        before = _ours(marker)
        assert any("raylet" in c for c in before.values()), before
        assert any("gcs_server" in c for c in before.values()), before
        assert any("coral.judge" in c or "bwrap" in c for c in before.values()), before
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=30)
        left = {}

        def gone():
            nonlocal left
            left = {p: c for p, c in _ours(marker).items() if process_start(p) is not None}
            return not left
        try:
            _wait_for(gone, 90, "the private Ray to go")
        except AssertionError:
            raise AssertionError(f"left behind: {json.dumps(left, indent=1)}") from None
        res = subprocess.run([sys.executable, "-m", "coral", "status", str(runs / "smoke")],
                             cwd=REPO, capture_output=True, text=True, timeout=120)
        assert "interrupted" in res.stdout.splitlines()[0], res.stdout + res.stderr
        assert "coral run" in res.stdout.splitlines()[0]
    finally:
        if driver.poll() is None:
            driver.kill()
        for pid in _ours(marker):          # never leave our processes to other tests
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        log.close()


DRIVER = """
import subprocess, sys, time
from cluster.reaper import start_reaper
start_reaper()
# like Ray's agents: in their own session, deaf to SIGTERM
subprocess.Popen([sys.executable, "-c", "import signal, time; "
                  "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"],
                 start_new_session=True)
subprocess.Popen(["sleep", "600"], start_new_session=True)
print("ready", flush=True)
time.sleep(600)
"""


def test_reaper_kills_this_runs_processes_even_deaf_ones_and_nothing_else():
    """A driver that marked its environment and spawned detached children (one ignoring
    SIGTERM) is SIGKILLed: the watcher kills exactly those children; a process of the same
    user without the run's token (another run) lives on."""
    value = uuid.uuid4().hex
    marker = f"{MARK}={value}".encode()
    env = dict(os.environ, **{MARK: value})
    bystander = subprocess.Popen(["sleep", "600"], env=env, start_new_session=True)
    driver = subprocess.Popen([sys.executable, "-c", DRIVER], cwd=REPO, env=env,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert driver.stdout.readline().strip() == "ready"
        children = {p for p, ppid in _parents().items() if ppid == driver.pid}
        assert len(children) >= 2
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=30)
        _wait_for(lambda: not any(process_start(p) for p in children), 30,
                  "the driver's children to be killed")
        assert process_start(bystander.pid) is not None       # not this run's: untouched
        _wait_for(lambda: set(_ours(marker)) <= {bystander.pid}, 30, "the watcher to exit")
    finally:
        for pid in _ours(marker):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        bystander.wait(timeout=30)
        if driver.poll() is None:
            driver.kill()
