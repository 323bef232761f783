"""`coral submit` for real: a private Ray head with a dashboard, the smoke config as a Ray job.

The head is started with ``ray start --head --block`` in its own session and temp dir, on
ports picked here, so it neither finds nor is found by other tests' ``ray.init`` sessions;
it is stopped by killing that process group only (never ``ray stop``, which stops every
Ray on the machine). Select alone with ``pytest -m submit``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from netutil import free_ports

from cluster import jobs
from coral import config as cfgmod

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "configs" / "smoke.yaml"

pytestmark = pytest.mark.submit


@pytest.fixture(scope="module")
def ray_head():
    """Dashboard URL of a private 2-CPU Ray head; its process group is killed afterwards."""
    ray_bin = Path(sys.executable).with_name("ray")
    temp_dir = tempfile.mkdtemp(prefix="crlh")  # short: Ray's socket paths have a length cap
    (gcs, dash, client, agent_http, agent_grpc, rt_agent, metrics, nm, om) = free_ports(9)
    cmd = [str(ray_bin), "start", "--head", "--block", "--num-cpus", "2", "--num-gpus", "0",
           "--port", str(gcs), "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash),
           "--ray-client-server-port", str(client), "--dashboard-agent-listen-port",
           str(agent_http), "--dashboard-agent-grpc-port", str(agent_grpc),
           "--runtime-env-agent-port", str(rt_agent), "--metrics-export-port", str(metrics),
           "--node-manager-port", str(nm), "--object-manager-port", str(om),
           "--temp-dir", temp_dir, "--disable-usage-stats", "--include-dashboard", "true"]
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)
    # Ray >= 2.5x turns token auth on for `ray start` once ~/.ray/auth_token exists (any local
    # ray.init creates one); this private head listens on 127.0.0.1 only, so say "off".
    env["RAY_AUTH_MODE"] = "disabled"
    # As docs/deploy.md starts it: `.venv/bin/ray start --head` without activating the venv,
    # so the venv is NOT on the head's PATH (the job must still run with the venv's python).
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                  if p and p != venv_bin)
    env.pop("VIRTUAL_ENV", None)
    log_path = Path(temp_dir) / "head.log"
    with open(log_path, "wb") as out:
        head = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
    url = f"http://127.0.0.1:{dash}"
    try:
        _wait_for_job_server(url, head, log_path)
        yield url
    finally:
        _kill_group(head)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _wait_for_job_server(url: str, head: subprocess.Popen, log_path: Path) -> None:
    """Poll until a JobSubmissionClient connects (the head takes ~10-30 s)."""
    deadline = time.monotonic() + 180
    last: Exception | None = None
    while time.monotonic() < deadline:
        if head.poll() is not None:
            pytest.fail(f"ray head exited {head.returncode}:\n{log_path.read_text()[-4000:]}")
        try:
            jobs.client(url)
            return
        except (OSError, RuntimeError) as exc:  # refused, or 404/5xx while routes register
            last = exc
            time.sleep(1)
    pytest.fail(f"job server at {url} did not come up ({last!r}):\n"
                f"{log_path.read_text()[-4000:]}")


def _kill_group(head: subprocess.Popen) -> None:
    """SIGTERM then SIGKILL the head's whole process group (only the processes we started)."""
    try:
        os.killpg(head.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        head.wait(timeout=20)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(head.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    head.wait(timeout=10)


def test_prepare_builds_job_from_config(tmp_path, monkeypatch):
    """The request ships the repo without .venv/.git/runs, joins the cluster, forwards env."""
    monkeypatch.setenv("CORAL_QUIXBUGS", "/data/Quix Bugs")
    monkeypatch.delenv("CORAL_CACHE", raising=False)  # forwarded too when set (CI sets it)
    req = jobs.prepare(SMOKE, ["search.generations=1"], env={"EXTRA": "1"})
    assert req.run_name == "smoke"
    # the driver forwards CORAL_QUIXBUGS to its workers itself, so it is set for the driver
    # only: the same variable in the job's runtime_env would make Ray refuse ray.init
    assert req.entrypoint == (jobs.HEAD_PYTHON + "exec env 'CORAL_QUIXBUGS=/data/Quix Bugs' "
                              '"$PY" -m cluster.driver configs/smoke.yaml '
                              "--set search.generations=1 --set ray.address=auto")
    renv = req.runtime_env
    assert renv["working_dir"] == str(REPO)
    assert {".venv", ".git", "runs", ".cache"} <= set(renv["excludes"])
    assert "CORAL_QUIXBUGS" not in renv["env_vars"] and renv["env_vars"]["EXTRA"] == "1"
    assert "pip" not in renv
    # an explicit address is kept; bad overrides fail here, before any upload
    req = jobs.prepare(SMOKE, ["ray.address=10.0.0.1:6379"], pip=["peft>=0.13"])
    assert "ray.address=auto" not in req.entrypoint and req.runtime_env["pip"] == ["peft>=0.13"]
    with pytest.raises(cfgmod.ConfigError, match="search.population_size"):
        jobs.prepare(SMOKE, ["search.population_size=0"])
    outside = tmp_path / "x.yaml"
    outside.write_text(SMOKE.read_text())
    with pytest.raises(cfgmod.ConfigError, match="must be inside"):
        jobs.prepare(outside)


def test_prepare_builds_a_compare_job(monkeypatch):
    """`coral submit --compare`: the job runs `python -m coral compare` with the same
    overrides and its own options, is named after the compare directory, and a comparison
    that could say nothing is refused here, before the upload."""
    monkeypatch.delenv("CORAL_QUIXBUGS", raising=False)
    monkeypatch.delenv("CORAL_CACHE", raising=False)
    req = jobs.prepare(SMOKE, ["search.budget.samples=32"],
                       comparison=jobs.Comparison(("nsga2", "random"), 2))
    assert req.run_name == "smoke-compare" and req.metadata["coral_run"] == "smoke-compare"
    assert req.entrypoint == (jobs.HEAD_PYTHON + 'exec "$PY" -m coral compare '
                              "configs/smoke.yaml --set search.budget.samples=32 "
                              "--set ray.address=auto --strategies nsga2,random "
                              "--replicates 2 --json")
    assert jobs.next_submission_id(req.run_name, ["coral-smoke-1"]) == "coral-smoke-compare-1"
    with pytest.raises(cfgmod.ConfigError, match="--replicates"):
        jobs.prepare(SMOKE, comparison=jobs.Comparison(("nsga2", "random"), 0))
    with pytest.raises(cfgmod.ConfigError, match="held_out_fraction"):
        jobs.prepare(SMOKE, ["dataset.held_out_fraction=0"],
                     comparison=jobs.Comparison(("nsga2", "random"), 1))


def test_submission_ids_count_attempts_per_run():
    """Resubmits of one run get the next attempt number; other runs' ids are ignored."""
    assert jobs.next_submission_id("smoke", []) == "coral-smoke-1"
    existing = ["coral-smoke-1", "coral-smoke-3", "coral-smoke-x", "coral-other-9",
                "raysubmit_abc", None]
    assert jobs.next_submission_id("smoke", existing) == "coral-smoke-4"
    assert jobs.next_submission_id("My Run/2", []) == "coral-my-run-2-1"


def test_entrypoint_finds_the_interpreter_that_runs_ray():
    """The entrypoint's shell, started by a Python process that loaded Ray (as Ray's job
    supervisor is), picks that process's own interpreter, not the `python` on PATH."""
    script = ("import subprocess, sys, ray; from cluster.jobs import HEAD_PYTHON; "
              "print(subprocess.run(['sh', '-c', HEAD_PYTHON + 'echo \"$PY\"'], "
              "capture_output=True, text=True).stdout.splitlines()[-1])")
    env = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root")}
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert Path(out.stdout.strip()) == Path(sys.executable).parent / "python"


def _coral(*args: str, env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    """`.venv/bin/coral ARGS` from the repository root, as docs/deploy.md runs it."""
    coral = Path(sys.executable).with_name("coral")
    return subprocess.run([str(coral), *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_submit_smoke_config_succeeds(ray_head, tmp_path, quixbugs_dir):
    """docs/deploy.md section 2, verbatim but for the config: `export CORAL_QUIXBUGS=...`,
    `coral submit CONFIG --address URL` (prints coral-<run>-1), `coral logs`, `coral jobs`."""
    env = dict(os.environ, CORAL_QUIXBUGS=str(quixbugs_dir))
    env.pop("RAY_ADDRESS", None)
    runs = tmp_path / "runs"
    res = _coral("submit", "configs/smoke.yaml", "--address", ray_head,
                 "--set", f"run.runs_dir={runs}", env=env)
    assert res.returncode == 0, res.stderr
    job_id = res.stdout.strip().splitlines()[-1]
    assert job_id == "coral-smoke-1"
    jc = jobs.client(ray_head)
    try:   # `coral logs JOB --follow` streams until the job ends
        followed = _coral("logs", job_id, "--follow", "--address", ray_head, env=env,
                          timeout=480)
    except subprocess.TimeoutExpired:
        jc.stop_job(job_id)
        raise
    status = jobs.wait(jc, job_id, timeout_s=60, poll_s=1)
    logs = jc.get_job_logs(job_id)
    assert status == "SUCCEEDED", f"job {job_id} ended {status}; logs:\n{logs[-6000:]}"
    assert "run directory:" in followed.stdout
    assert f"coral: driver interpreter {Path(sys.executable).parent / 'python'}" in logs
    run_dir = runs / "smoke"
    for name in ("checkpoint.json", "events.jsonl", "best.json"):
        assert (run_dir / name).is_file(), f"{name} missing in {sorted(os.listdir(run_dir))}"
    res = _coral("logs", job_id, "--address", ray_head, env=env)
    assert res.returncode == 0 and "run directory:" in res.stdout, res.stderr
    res = _coral("jobs", "--address", ray_head, env=env)
    assert res.stdout.strip().splitlines()[-1].split()[:3] == [job_id, "SUCCEEDED", "smoke"]
    # a resubmit of the same run is a new, visible attempt (it resumes from the checkpoint)
    listed = [r["id"] for r in jobs.coral_jobs(jc)]
    assert jobs.next_submission_id("smoke", listed) == "coral-smoke-2"


def test_submit_compare_runs_coral_compare_as_a_job(ray_head, tmp_path, quixbugs_dir):
    """docs/running.md's "On a cluster": `coral submit CONFIG --compare` runs the comparison
    as the job's driver; its log ends with the summary's JSON line and the compare directory
    holds both arms at equal samples spent."""
    env = dict(os.environ, CORAL_QUIXBUGS=str(quixbugs_dir))
    env.pop("RAY_ADDRESS", None)
    runs = tmp_path / "runs"
    res = _coral("submit", "configs/smoke.yaml", "--address", ray_head, "--compare",
                 "--replicates", "1", "--set", f"run.runs_dir={runs}",
                 "--set", "search.budget.samples=32", "--wait", env=env, timeout=540)
    assert res.returncode == 0, f"{res.stdout[-6000:]}\n{res.stderr[-3000:]}"
    job_id = res.stdout.splitlines()[0]  # printed first, then the streamed log, then status
    assert res.stdout.strip().splitlines()[-1] == f"{job_id}: SUCCEEDED"
    assert job_id == "coral-smoke-compare-1"
    logs = jobs.client(ray_head).get_job_logs(job_id)
    summary = json.loads([line for line in logs.splitlines() if line.startswith("{")][-1])
    assert summary["replicates"] == 1 and set(summary["arms"]) == {"nsga2", "random"}
    used = [summary["arms"][s]["samples_used"][0] for s in ("nsga2", "random")]
    assert used[0] == used[1] >= 32, used
    assert (runs / "smoke-compare" / "compare.md").is_file()
