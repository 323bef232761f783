"""Ray inside Modal: one (or a cluster of) GPU container(s) runs a Ray cluster and the driver.

    modal run --detach cluster/modal_app.py --config configs/cluster-codellama.yaml
    coral modal run configs/cluster-codellama.yaml --detach          # the same, from coral

Rank 0 starts ``ray start --head`` and, once `world_size` nodes have joined, runs
`cluster.driver.run`; ranks > 0 ``ray start --address=HEAD --block`` and exit when the head
goes away.  The Modal Volume `SPEC["volume"]` is mounted at /vol and written by rank 0 only
(`modal_overrides`): the run directory and the persistent adapter store (the CacheActor runs
on the driver's node). It is committed by rank 0 every `commit_every_s` and at the end, so a
retried or resubmitted function resumes from checkpoint.json (the driver resumes by default).
`modal.Retries` restarts the whole function after an infrastructure failure.

Multi-node (``CORAL_MODAL_NODES`` > 1) needs no shared file system: trained adapters travel
between containers through Ray's object store (the CacheActor hands out references, each
generation actor fetches into its container's own /tmp), and with more than one node every
container keeps its own model cache on local disk, so nothing is written to the Volume by
two containers. Modal's limits shape the rest: a clustered container takes ALL GPUs of its
host (``H100:8``) and CPU-only clusters do not exist, so the JudgePool's sandboxes run on the
GPU hosts' CPUs; functions time out after at most 24 h (the run resumes on the next call).

The Modal function only gathers rank/IPs and calls `entry`, a plain function that tests run
on a local Ray.  `SPEC` is read from CORAL_MODAL_* environment variables at import, because
Modal evaluates the decorators when the app is loaded.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
REMOTE_ROOT = "/root/coral"
MOUNT = "/vol"
QUIXBUGS_IN_IMAGE = "/opt/QuixBugs"

SPEC: dict = {
    "app_name": os.environ.get("CORAL_MODAL_APP", "coral"),
    "gpu": os.environ.get("CORAL_MODAL_GPU", "H100:8"),
    "nodes": int(os.environ.get("CORAL_MODAL_NODES", "1")),
    # Physical CPU cores and memory per container: the JudgePool's sandboxes run on these
    # CPUs, and Ray is told twice as many logical CPUs (`ray_cpus`; it would otherwise count
    # the whole host's)
    "cpu": float(os.environ.get("CORAL_MODAL_CPU", "32")),
    "memory_mb": int(os.environ.get("CORAL_MODAL_MEMORY_MB", str(256 * 1024))),
    "volume": os.environ.get("CORAL_MODAL_VOLUME", "coral"),
    "mount": MOUNT,
    "python": "3.11",
    "timeout_s": 24 * 3600,              # Modal's maximum; a longer run resumes on retry
    # Modal caps retry delays at 60 s
    "retries": {"max_retries": 3, "initial_delay": 15.0, "backoff_coefficient": 2.0,
                "max_delay": 60.0},
    "ray_port": 6379,
    "commit_every_s": 60.0,
}
IGNORE = [".venv", ".git", "runs", ".cache", "**/__pycache__", "*.egg-info", ".pytest_cache"]


LOCAL_CACHE = "/root/.cache/coral"   # a container's own disk
LOCAL_HF_HOME = "/root/.cache/huggingface"


def ray_cpus(cpu: float) -> int:
    """CPUs Ray is told per container: Modal's `cpu` counts physical cores, Ray counts
    logical CPUs (two hardware threads per core), and each sandbox is one thread."""
    return int(2 * cpu)


def hf_home(mount: str = MOUNT, nodes: int = 1) -> str:
    """Where Hugging Face keeps downloaded weights: on the Volume for one container, so a
    retry or the next run does not download 13.5 GB again; each container's own disk for
    several (they must not write the same files), as for the model cache."""
    return f"{mount}/huggingface" if nodes == 1 else LOCAL_HF_HOME


def modal_overrides(mount: str = MOUNT, nodes: int = 1) -> list[str]:
    """Overrides putting the run directory and the adapter store on the Volume (written by the
    head only) and QuixBugs in the image; the model cache is on the Volume for one node, on
    each container's own disk for several (containers do not see each other's Volume writes
    until a commit and reload, and must not write the same files)."""
    cache = f"{mount}/cache" if nodes == 1 else LOCAL_CACHE
    return [f"run.runs_dir={mount}/runs", f"storage.adapters={mount}/adapters",
            f"model.cache_dir={cache}", f"dataset.quixbugs={QUIXBUGS_IN_IMAGE}"]


def ray_start_command(rank: int, head_address: str, port: int, *,
                      temp_dir: Optional[str] = None, extra: Sequence[str] = ()) -> list[str]:
    """``ray start`` argv for a rank: the head on rank 0, a blocking worker elsewhere."""
    ray_bin = str(Path(sys.executable).with_name("ray"))
    if rank == 0:
        cmd = [ray_bin, "start", "--head", f"--node-ip-address={head_address}", f"--port={port}",
               "--block", "--disable-usage-stats"]
    else:
        cmd = [ray_bin, "start", f"--address={head_address}:{port}", "--block",
               "--disable-usage-stats"]
    if temp_dir:
        cmd.append(f"--temp-dir={temp_dir}")
    return cmd + list(extra)


def wait_for_port(host: str, port: int, timeout_s: float,
                  proc: Optional[subprocess.Popen] = None) -> None:
    """Return once `host:port` accepts TCP connections; fail early if `proc` exits."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host, port), timeout=2):
                return
        except OSError:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"{' '.join(proc.args)} exited with {proc.returncode}") from None
            if time.monotonic() > deadline:
                raise TimeoutError(f"{host}:{port} not reachable after {timeout_s:.0f}s") from None
            time.sleep(1)


def wait_for_nodes(address: str, count: int, timeout_s: float) -> int:
    """Block until `count` Ray nodes are alive at `address`; return how many are."""
    import ray

    ray.init(address=address, log_to_driver=False)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            alive = sum(1 for n in ray.nodes() if n["Alive"])
            if alive >= count:
                return alive
            if time.monotonic() > deadline:
                raise TimeoutError(f"{alive}/{count} Ray nodes after {timeout_s:.0f}s")
            time.sleep(2)
    finally:
        ray.shutdown()


def _stop_group(proc: subprocess.Popen) -> None:
    """Terminate, then kill, the process group of a `ray start --block` we launched."""
    for sig, wait_s in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def _committer(commit: Callable[[], None], every_s: float) -> Callable[[], None]:
    """Start a thread calling `commit` every `every_s`; return the function that stops it."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(every_s):
            commit()

    thread = threading.Thread(target=loop, name="volume-commit", daemon=True)
    thread.start()

    def finish() -> None:
        stop.set()
        thread.join()
        commit()
    return finish


def entry(config_path: str, overrides: Sequence[str], rank: int, world_size: int,
          head_address: str, *, port: int = SPEC["ray_port"], temp_dir: Optional[str] = None,
          ray_args: Sequence[str] = (), join_timeout_s: float = 900.0,
          commit: Optional[Callable[[], None]] = None,
          commit_every_s: float = SPEC["commit_every_s"]) -> Optional[Path]:
    """Run one rank: head + driver on rank 0 (returns the run dir), a Ray worker elsewhere."""
    from coral import config as cfgmod

    address = f"{head_address}:{port}"
    # the driver joins exactly this head: "auto" could pick another Ray on a shared machine
    final = list(overrides) + [f"ray.address={address}"]
    cfg = cfgmod.load(config_path, final)  # a bad config fails before any Ray starts
    if rank > 0:
        wait_for_port(head_address, port, join_timeout_s)
    cmd = ray_start_command(rank, head_address, port, temp_dir=temp_dir, extra=ray_args)
    log.info("rank %d/%d: %s", rank, world_size, " ".join(cmd))
    ray_proc = subprocess.Popen(cmd, start_new_session=True)
    finish = _committer(commit, commit_every_s) if commit else None
    try:
        if rank > 0:
            code = ray_proc.wait()  # returns when the head (and so this node) goes away
            log.info("rank %d: ray exited with %d", rank, code)
            return None
        wait_for_port(head_address, port, join_timeout_s, ray_proc)
        alive = wait_for_nodes(address, world_size, join_timeout_s)
        log.info("rank 0: %d Ray nodes alive, starting the driver for %s", alive, cfg.run.name)
        from cluster import driver

        return Path(driver.run(cfg, resume=True))
    finally:
        if finish:
            finish()
        _stop_group(ray_proc)


# --------------------------------------------------------------------------- Modal wiring

def _cluster_rank() -> tuple[int, list[str]]:
    """(rank, IPv4 of every container) from Modal's cluster context."""
    import modal

    if hasattr(modal, "Cluster"):
        cluster = modal.Cluster.from_context()
        return cluster.container_rank(), list(cluster.container_ips(family="ipv4"))
    info = modal.experimental.get_cluster_info()  # modal < 1.5
    return info.rank, list(info.container_ipv4_ips)


def _run_on_modal(config_path: str, overrides: list[str]) -> str:
    """Body of the Modal function: find this container's rank and call `entry`."""
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if SPEC["nodes"] > 1:
        rank, ips = _cluster_rank()
    else:
        rank, ips = 0, ["127.0.0.1"]
    # Before Ray starts: its workers inherit it (and the driver forwards it, cluster.local).
    os.environ["HF_HOME"] = hf_home(SPEC["mount"], len(ips))
    run_dir = entry(config_path, modal_overrides(SPEC["mount"], len(ips)) + list(overrides),
                    rank, len(ips), ips[0], ray_args=[f"--num-cpus={ray_cpus(SPEC['cpu'])}"],
                    commit=volume.commit if rank == 0 else None,   # only the head writes
                    commit_every_s=SPEC["commit_every_s"])
    return str(run_dir) if run_dir else ""


try:
    import modal
except ModuleNotFoundError:  # the optional extra `modal` is not installed: entry() still works
    modal = None

if modal is not None:
    app = modal.App(SPEC["app_name"])
    volume = modal.Volume.from_name(SPEC["volume"], create_if_missing=True)
    image = (modal.Image.debian_slim(python_version=SPEC["python"])
             # bubblewrap + libseccomp: the judge's kernel boundary, where Modal's sandbox
             # allows user namespaces (isolation: auto falls back to the guard, warning).
             .apt_install("git", "bubblewrap", "libseccomp2")
             .pip_install_from_pyproject(str(REPO_ROOT / "pyproject.toml"))
             .run_commands("git clone --depth 1 https://github.com/jkoppel/QuixBugs "
                           + QUIXBUGS_IN_IMAGE)
             .env({"PYTHONPATH": REMOTE_ROOT, "CORAL_QUIXBUGS": QUIXBUGS_IN_IMAGE,
                   "PYTHONUNBUFFERED": "1"})
             .workdir(REMOTE_ROOT)
             .add_local_dir(REPO_ROOT, REMOTE_ROOT, ignore=IGNORE))
    FUNCTION_OPTIONS = dict(image=image, gpu=SPEC["gpu"], cpu=SPEC["cpu"],
                            memory=SPEC["memory_mb"], volumes={SPEC["mount"]: volume},
                            timeout=SPEC["timeout_s"], retries=modal.Retries(**SPEC["retries"]))

    def run_cluster(config_path: str, overrides: list[str]) -> str:
        """Modal function: one rank of the Ray cluster (rank 0 returns the run directory)."""
        return _run_on_modal(config_path, overrides)

    if SPEC["nodes"] > 1:
        clustered = getattr(modal, "clustered", None) or modal.experimental.clustered
        run_cluster = clustered(size=SPEC["nodes"])(run_cluster)
    run_cluster = app.function(**FUNCTION_OPTIONS)(run_cluster)

    @app.local_entrypoint()
    def main(config: str, overrides_json: str = "[]") -> None:
        """`modal run cluster/modal_app.py --config C [--overrides-json '["k=v"]']`."""
        overrides = json.loads(overrides_json)
        print(run_cluster.remote(config, overrides))
