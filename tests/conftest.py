"""Shared fixtures. Areas append their own fixtures below; keep each one small and real."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# The suite (and so CI) judges behind the kernel boundary or fails: `auto` becomes `strict`
# (coral.judge.boundary), so a machine without bubblewrap/libseccomp cannot pass silently.
os.environ.setdefault("CORAL_SANDBOX_ISOLATION", "strict")


def _quixbugs_dir() -> Path:
    """The QuixBugs checkout used by tests: $CORAL_QUIXBUGS, else ../shared/quixbugs."""
    env = os.environ.get("CORAL_QUIXBUGS")
    path = Path(env) if env else REPO.parent / "shared" / "quixbugs"
    return path.resolve()


@pytest.fixture(scope="session")
def quixbugs_dir() -> Path:
    """Path of the real QuixBugs data; the suite needs it (CI has ../shared/quixbugs)."""
    path = _quixbugs_dir()
    if not (path / "python_programs").is_dir():
        pytest.fail(f"QuixBugs not found at {path}; set CORAL_QUIXBUGS to a clone of "
                    "the upstream repository")
    return path


@pytest.fixture(scope="session")
def ray_local():
    """A real local Ray with 2 CPUs, shared by the whole session."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {
                     "CORAL_QUIXBUGS": str(_quixbugs_dir()),
                     "CORAL_SANDBOX_ISOLATION": os.environ["CORAL_SANDBOX_ISOLATION"]}})
    yield ray
    ray.shutdown()


@pytest.fixture
def smoke_config(tmp_path, quixbugs_dir):
    """Factory: configs/smoke.yaml as a run named `name` under tmp_path, plus overrides."""
    from coral import config as cfgmod

    def load(name: str, *overrides: str, adapters: str = "adapters"):
        return cfgmod.load("configs/smoke.yaml", [
            f"dataset.quixbugs={quixbugs_dir}", f"run.runs_dir={tmp_path}/runs",
            f"storage.adapters={tmp_path}/{adapters}", f"run.name={name}", *overrides])
    return load
