"""The Modal target without Modal credentials: function definitions, overrides, ray commands,
and `entry` (the body of the Modal function) run for rank 0 on a real local Ray head."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from netutil import free_ports

from coral import config as cfgmod

modal = pytest.importorskip("modal")
from cluster import modal_app  # noqa: E402  (needs modal for the app objects)

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "configs" / "smoke.yaml"


def test_function_definition_matches_spec():
    """GPU, Volume at /vol, retries with backoff, 24 h timeout, and a local entrypoint."""
    spec = modal_app.SPEC
    fn = modal_app.run_cluster
    assert isinstance(fn, modal.Function)
    assert fn._spec_.gpus == spec["gpu"] == "H100:8"
    assert list(fn._spec_.volumes) == ["/vol"] and spec["mount"] == "/vol"
    opts = modal_app.FUNCTION_OPTIONS
    assert isinstance(opts["volumes"]["/vol"], modal.Volume)
    assert f"from_name('{spec['volume']}')" in repr(fn._spec_.volumes["/vol"])
    assert opts["timeout"] == spec["timeout_s"] == 24 * 3600
    retries = opts["retries"]
    assert isinstance(retries, modal.Retries) and retries.max_retries == 3
    assert retries.initial_delay.total_seconds() == spec["retries"]["initial_delay"] > 0
    assert retries.backoff_coefficient == 2.0
    assert fn._spec_.cpu == spec["cpu"] > 0 and fn._spec_.memory == spec["memory_mb"]
    assert callable(modal_app.main)
    assert spec["nodes"] == 1


def test_clustered_spec_from_environment():
    """CORAL_MODAL_NODES/GPU build a clustered function (checked in a fresh interpreter)."""
    code = ("import json, cluster.modal_app as m; "
            "print(json.dumps([m.SPEC['nodes'], m.run_cluster._spec_.gpus]))")
    env = dict(os.environ, CORAL_MODAL_NODES="2", CORAL_MODAL_GPU="A100-80GB:8",
               PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", code], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [2, "A100-80GB:8"]


def test_overrides_put_state_on_the_volume():
    """The Modal overrides resolve to a valid config with runs/adapters/cache under /vol."""
    cfg = cfgmod.load(REPO / "configs" / "cluster-codellama.yaml",
                      modal_app.modal_overrides() + ["search.generations=2"])
    assert cfg.run.runs_dir == "/vol/runs"
    assert cfg.storage.adapters == "/vol/adapters"
    assert cfg.model.cache_dir == "/vol/cache"
    assert cfg.dataset.quixbugs == modal_app.QUIXBUGS_IN_IMAGE
    assert cfg.search.generations == 2  # user overrides come after and win
    # several nodes: the Volume is the head's alone, each container caches the model locally
    many = cfgmod.load(REPO / "configs" / "cluster-codellama.yaml", modal_app.modal_overrides(
        nodes=2))
    assert (many.run.runs_dir, many.storage.adapters) == ("/vol/runs", "/vol/adapters")
    assert many.model.cache_dir == modal_app.LOCAL_CACHE and not many.model.cache_dir.startswith(
        "/vol")


def test_ray_start_commands():
    """Rank 0 blocks as the head on its own IP; other ranks block joined to rank 0."""
    head = modal_app.ray_start_command(0, "10.0.0.1", 6379, temp_dir="/tmp/r")
    assert Path(head[0]).name == "ray" and head[1:3] == ["start", "--head"]
    assert {"--node-ip-address=10.0.0.1", "--port=6379", "--block",
            "--temp-dir=/tmp/r"} <= set(head)
    worker = modal_app.ray_start_command(2, "10.0.0.1", 6379, extra=["--num-cpus=4"])
    assert "--head" not in worker and "--address=10.0.0.1:6379" in worker
    assert "--block" in worker and worker[-1] == "--num-cpus=4"


def test_coral_modal_run_dry_run(capsys):
    """`coral modal run --dry-run` validates the config and prints the modal command."""
    from coral.cli import main

    assert main(["modal", "run", str(SMOKE), "--set", "search.generations=1", "--detach",
                 "--dry-run"]) == 0
    line = capsys.readouterr().out.strip()
    assert "-m modal run --detach -m cluster.modal_app --config configs/smoke.yaml" in line
    assert line.endswith('--overrides-json ["search.generations=1"]')
    assert main(["modal", "run", str(SMOKE), "--set", "search.generations=0", "--dry-run"]) == 2


def test_entry_rank0_runs_smoke_on_local_ray(tmp_path, quixbugs_dir, monkeypatch):
    """`entry` for rank 0 of 1 starts a private head, runs the smoke config, commits, stops."""
    monkeypatch.setenv("CORAL_QUIXBUGS", str(quixbugs_dir))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    # private head on 127.0.0.1: no token auth (Ray enables it once ~/.ray/auth_token exists)
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    port, dash, client, ahttp, agrpc, rt, metrics, nm, om = free_ports(9)
    ray_args = ["--num-cpus=2", "--num-gpus=0", "--include-dashboard=false",
                f"--dashboard-port={dash}", f"--ray-client-server-port={client}",
                f"--dashboard-agent-listen-port={ahttp}", f"--dashboard-agent-grpc-port={agrpc}",
                f"--runtime-env-agent-port={rt}", f"--metrics-export-port={metrics}",
                f"--node-manager-port={nm}", f"--object-manager-port={om}"]
    temp_dir = tempfile.mkdtemp(prefix="crlm")  # short: Ray's socket paths have a length cap
    # the smoke config cut to one small generation: the whole driver, about half the time
    small = [f"run.runs_dir={tmp_path / 'runs'}", "search.generations=1",
             "search.population_size=2", "run.held_out_eval=false"]
    # In its own interpreter, as inside a Modal container: this pytest process may already be
    # connected to the session's local Ray, and a process can join only one Ray at a time.
    commits = tmp_path / "commits"
    code = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from cluster import modal_app\n"
        "a = json.loads(sys.argv[1])\n"
        "mark = Path(a['commits'])\n"
        "run_dir = modal_app.entry(a['config'], a['overrides'], rank=0, world_size=1,\n"
        "    head_address='127.0.0.1', port=a['port'], temp_dir=a['temp_dir'],\n"
        "    ray_args=a['ray_args'], join_timeout_s=120,\n"
        "    commit=lambda: mark.open('a').write('1'), commit_every_s=5)\n"
        "print('RUN_DIR=' + str(run_dir))\n")
    args = {"config": str(SMOKE), "overrides": small, "port": port, "temp_dir": temp_dir,
            "ray_args": ray_args, "commits": str(commits)}
    out = subprocess.run([sys.executable, "-c", code, json.dumps(args)], cwd=REPO,
                         capture_output=True, text=True, timeout=480, env=os.environ.copy())
    assert out.returncode == 0, out.stderr[-3000:]
    run_dir = Path(out.stdout.strip().splitlines()[-1].removeprefix("RUN_DIR="))
    assert run_dir == tmp_path / "runs" / "smoke"
    for name in ("checkpoint.json", "events.jsonl", "best.json"):
        assert (run_dir / name).is_file(), name
    assert commits.is_file() and commits.read_text(), "the Volume was never committed"
    with pytest.raises(OSError):  # the head is gone
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
