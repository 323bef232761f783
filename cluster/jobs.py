"""Run CORAL on any Ray cluster as a Ray job (Ray's Job Submission SDK, dashboard port 8265).

`submit` packages the repository as the job's `working_dir` (without .venv, .git, runs,
caches), starts ``python -m cluster.driver CONFIG --set ...`` on the head node (or, for a
`Comparison`, ``python -m coral compare CONFIG --set ... --strategies ... --replicates R
--json``) and returns the submission id. Ray does not retry jobs: a job that dies is resubmitted, and because the
driver keeps its run directory under `run.runs_dir` (storage the cluster can reach) and
resumes from checkpoint.json by default, the new job continues where the old one stopped.
Submission ids are ``coral-<run name>-<attempt>`` so every resubmit of a run is visible in
`coral jobs` and the dashboard.

The cluster's Python must already have CORAL's dependencies (the image / setup_commands in
cluster/ray-*.yaml install them), or the job can install them itself with `pip=` (runtime_env
pip, slow: once per node and per requirement set).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Optional

from cluster.local import WORKER_ENV
from coral import config as cfgmod

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
DRIVER_MODULE = "cluster.driver"
COMPARE_COMMAND = ("coral", "compare")  # `python -m coral compare`, the command line's own
# gitignore-style patterns, relative to the working_dir; Ray caps the upload (~500 MiB), and
# shipping a virtualenv or old runs would be both slow and wrong on another machine.
WORKING_DIR_EXCLUDES = (".venv", ".git", "runs", ".cache", "__pycache__", "*.pyc",
                        "*.egg-info", "build", "dist", ".pytest_cache", ".whl", ".ci")
# What `coral submit` copies from your shell to the job when set (the paths must exist on the
# cluster too). Not HF_TOKEN: job variables show in the dashboard, so a secret is passed
# explicitly with --env. The driver then forwards cluster.local.WORKER_ENV to its workers.
SUBMIT_ENV = ("CORAL_QUIXBUGS", "CORAL_CACHE")
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


@dataclass(frozen=True)
class Comparison:
    """A job that runs `coral compare` instead of one run: its strategies and replicates."""

    strategies: tuple[str, ...]
    replicates: int

    def arguments(self) -> list[str]:
        """`coral compare`'s own options; --json so the job log ends with the summary."""
        return ["--strategies", ",".join(self.strategies), "--replicates",
                str(self.replicates), "--json"]


@dataclass(frozen=True)
class JobRequest:
    """Everything `JobSubmissionClient.submit_job` needs except the submission id."""

    run_name: str
    entrypoint: str
    runtime_env: dict
    metadata: dict


def default_address() -> str:
    """The dashboard address: $RAY_ADDRESS when it is an http(s) URL, else the local head's."""
    env = os.environ.get("RAY_ADDRESS", "")
    return env if env.startswith(("http://", "https://")) else "http://127.0.0.1:8265"


def config_in_repo(config_path: str | os.PathLike, root: Path = REPO_ROOT) -> str:
    """The config's path relative to the uploaded working_dir (it must live inside it)."""
    path = Path(config_path).resolve()
    try:
        return path.relative_to(root.resolve()).as_posix()
    except ValueError:
        raise cfgmod.ConfigError(
            f"{config_path}: must be inside {root} (the directory shipped to the cluster); "
            "copy it under configs/") from None


def job_overrides(cfg: cfgmod.Config, overrides: Iterable[str]) -> list[str]:
    """The user's overrides plus ``ray.address=auto`` when the config would start its own Ray."""
    out = list(overrides)
    if cfg.ray.address is None:
        # A job's driver must join the cluster it runs in; a local ray.init(num_cpus=...)
        # there would fail (or start a second Ray on the head node).
        out.append("ray.address=auto")
    return out


def job_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """Variables the job needs: SUBMIT_ENV as set here, then `env`."""
    out = {name: os.environ[name] for name in SUBMIT_ENV if os.environ.get(name)}
    out.update(env or {})
    return out


# Shell that sets $PY to the head's own interpreter. Ray runs the entrypoint with `sh -c` from
# its job supervisor, a Python worker started with the interpreter `ray start` ran with; a bare
# `python` would be whatever comes first on the head's PATH (a head started as
# `.venv/bin/ray start` without activating the venv then fails with ModuleNotFoundError). The
# supervisor's proctitle hides its argv and /proc/PID/exe resolves the venv's symlink away, so
# the interpreter is found from where the supervisor loaded Ray from:
# <prefix>/lib/pythonX.Y/{site,dist}-packages/ray/_raylet.so -> <prefix>/bin/python.
HEAD_PYTHON = (
    "PY=python; "
    "R=$(grep -m 1 -o '/.*/ray/_raylet[.]so' /proc/$PPID/maps 2>/dev/null); "
    'case "$R" in */lib/python*/*-packages/ray/_raylet.so) '
    '[ -x "${R%/lib/python*}/bin/python" ] && PY="${R%/lib/python*}/bin/python";; esac; '
    'echo "coral: driver interpreter $PY"; ')


def entrypoint_for(config_rel: str, overrides: Iterable[str],
                   env: dict[str, str] | None = None,
                   comparison: Optional[Comparison] = None) -> str:
    """The shell command the job runs on the head node (`env` set for the driver only)."""
    parts = ["env", *(f"{k}={v}" for k, v in sorted((env or {}).items()))] if env else []
    command = ["-m", *COMPARE_COMMAND] if comparison else ["-m", DRIVER_MODULE]
    args = [*command, config_rel]
    for item in overrides:
        args += ["--set", item]
    if comparison:
        args += comparison.arguments()
    return " ".join(filter(None, [HEAD_PYTHON + "exec", shlex.join(parts), '"$PY"',
                                  shlex.join(args)]))


def runtime_env_for(root: Path, cfg: cfgmod.Config, env: dict[str, str] | None = None,
                    pip: Optional[Iterable[str]] = None) -> dict:
    """The job's runtime_env: working_dir=root with excludes, env vars, optional pip list."""
    excludes = list(WORKING_DIR_EXCLUDES)
    runs = Path(cfg.run.runs_dir)
    if not runs.is_absolute():
        excludes.append(runs.as_posix())
    env_vars = {"PYTHONUNBUFFERED": "1", **(env or {})}
    runtime_env = {"working_dir": str(root), "excludes": excludes, "env_vars": env_vars}
    if pip:
        runtime_env["pip"] = list(pip)
    return runtime_env


def prepare(config_path: str | os.PathLike, overrides: Iterable[str] = (),
            env: dict[str, str] | None = None, pip: Optional[Iterable[str]] = None,
            root: Path = REPO_ROOT, comparison: Optional[Comparison] = None) -> JobRequest:
    """Validate the config here (errors surface before anything is uploaded) and build the job."""
    overrides = list(overrides)
    cfg = cfgmod.load(config_path, overrides)
    if comparison:
        from coral.run.compare import check_request

        check_request(cfg, comparison.strategies, comparison.replicates)
    rel = config_in_repo(config_path, root)
    final = job_overrides(cfg, overrides)
    cfgmod.load(config_path, final)  # the exact config the driver will load
    variables = job_env(env)
    # The driver forwards WORKER_ENV to its workers through ray.init(runtime_env=...);
    # Ray refuses to merge that with a job runtime_env setting the same variable, so those
    # reach the driver through the entrypoint and everything else through the runtime_env.
    for_driver = {k: v for k, v in variables.items() if k in WORKER_ENV}
    for_job = {k: v for k, v in variables.items() if k not in WORKER_ENV}
    runtime_env = runtime_env_for(root, cfg, for_job, pip)
    if cfg.dataset.quixbugs is None and "CORAL_QUIXBUGS" not in variables:
        log.warning("dataset.quixbugs is null and CORAL_QUIXBUGS is not set: the job finds "
                    "QuixBugs only where the cluster's nodes have one (a `coral data pull` copy "
                    "in their cache, or ../shared/quixbugs beside the job's working directory)")
    # A comparison's jobs are named after its compare directory, <run.name>-compare.
    run_name = f"{cfg.run.name}-compare" if comparison else cfg.run.name
    metadata = {"coral_run": run_name, "config": rel, "runs_dir": cfg.run.runs_dir}
    return JobRequest(run_name, entrypoint_for(rel, final, for_driver, comparison),
                      runtime_env, metadata)


def slug(text: str) -> str:
    """Lower-case id-safe form of a run name."""
    return re.sub(r"[^a-z0-9_]+", "-", text.lower()).strip("-") or "run"


def next_submission_id(run_name: str, existing: Iterable[str]) -> str:
    """``coral-<run>-<n>`` with n one past the highest attempt already on the cluster."""
    prefix = f"coral-{slug(run_name)}-"
    attempts = [int(m.group(1)) for s in existing if s
                for m in [re.fullmatch(re.escape(prefix) + r"(\d+)", s)] if m]
    return f"{prefix}{max(attempts, default=0) + 1}"


def client(address: str | None = None):
    """A JobSubmissionClient for the dashboard at `address` (default: `default_address()`)."""
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(address or default_address())


def submit(job_client, request: JobRequest) -> str:
    """Submit `request` under the next free ``coral-<run>-<n>`` id; return that id."""
    existing = [j.submission_id for j in job_client.list_jobs()]
    submission_id = next_submission_id(request.run_name, existing)
    job_id = job_client.submit_job(entrypoint=request.entrypoint, submission_id=submission_id,
                                   runtime_env=request.runtime_env, metadata=request.metadata)
    log.info("submitted %s: %s", job_id, request.entrypoint)
    return job_id


def wait(job_client, job_id: str, timeout_s: float = 3600.0, poll_s: float = 2.0) -> str:
    """Block until the job is SUCCEEDED/FAILED/STOPPED; return that status; TimeoutError after."""
    deadline = time.monotonic() + timeout_s
    last = None
    while True:
        status = str(job_client.get_job_status(job_id).value)
        if status != last:
            log.info("job %s: %s", job_id, status)
            last = status
        if status in TERMINAL:
            return status
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} still {status} after {timeout_s:.0f}s")
        time.sleep(poll_s)


def follow_logs(job_client, job_id: str, write: Callable[[str], object]) -> None:
    """Stream the job's logs to `write` until the job ends."""
    async def pump() -> None:
        async for chunk in job_client.tail_job_logs(job_id):
            write(chunk)

    asyncio.run(pump())


def coral_jobs(job_client) -> list[dict]:
    """CORAL's jobs on the cluster (submission id, status, run, start time), oldest first."""
    rows = []
    for job in job_client.list_jobs():
        if not (job.submission_id or "").startswith("coral-"):
            continue
        rows.append({"id": job.submission_id, "status": str(job.status.value),
                     "run": (job.metadata or {}).get("coral_run", ""),
                     "start_time": job.start_time or 0, "message": job.message or ""})
    return sorted(rows, key=lambda r: (r["start_time"], r["id"]))
