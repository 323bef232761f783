"""The cluster definitions in cluster/ parse, pass Ray's own checks and point at real files."""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

import pytest
import yaml

from coral import config as cfgmod

REPO = Path(__file__).resolve().parents[2]
AUTOSCALER = [REPO / "cluster" / "ray-aws.yaml", REPO / "cluster" / "ray-gcp.yaml"]
RAYJOB = REPO / "cluster" / "kuberay-rayjob.yaml"


def _min_python() -> tuple[int, int]:
    """The lowest Python that pyproject's requires-python allows."""
    spec = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    major, minor = re.search(r">=\s*(\d+)\.(\d+)", spec).groups()
    return int(major), int(minor)


def _image_python(image: str) -> tuple[int, int]:
    """Python version of a rayproject/ray image from its ``-pyNNN`` tag."""
    m = re.search(r"-py(\d)(\d+)", image)
    assert m, f"image {image} does not name its Python (rayproject/ray:X-pyNNN[-gpu])"
    return int(m.group(1)), int(m.group(2))


def _entrypoint_targets(entrypoint: str) -> tuple[str, str]:
    """(module, config) of ``python -m MODULE CONFIG ...``."""
    argv = shlex.split(entrypoint)
    assert argv[:2] == ["python", "-m"], entrypoint
    return argv[2], argv[3]


def _module_path(module: str) -> Path:
    """The repository file a dotted module name refers to."""
    return REPO / (module.replace(".", "/") + ".py")


@pytest.mark.parametrize("path", AUTOSCALER, ids=lambda p: p.name)
def test_autoscaler_yaml_is_valid(path):
    """Required keys, Ray's own schema, a GPU worker type, a CPU worker type, a sane image."""
    raw = yaml.safe_load(path.read_text())
    for key in ("cluster_name", "provider", "available_node_types", "head_node_type",
                "max_workers"):
        assert key in raw, f"{path.name}: {key} missing"
    types = raw["available_node_types"]
    assert raw["head_node_type"] in types
    gpu = [n for n, t in types.items() if t.get("resources", {}).get("GPU", 0) >= 1]
    cpu = [n for n, t in types.items() if n != raw["head_node_type"]
           and not t.get("resources", {}).get("GPU") and t.get("resources", {}).get("CPU")]
    assert gpu and cpu, f"{path.name}: needs a GPU worker type and a CPU worker type"
    assert sum(types[n].get("max_workers", 0) for n in types) <= raw["max_workers"] + 1
    assert any("pip install" in c for c in raw["setup_commands"])
    # the judge's kernel boundary: bubblewrap installed, user namespaces allowed in Docker
    assert any("bubblewrap" in c and "libseccomp2" in c for c in raw["setup_commands"])
    assert "--security-opt seccomp=unconfined" in raw["docker"]["run_options"]
    assert _image_python(raw["docker"]["image"]) >= _min_python()
    # `ray up` runs exactly these two steps before touching the cloud
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(raw))


def test_gpu_workers_fit_the_codellama_config():
    """Every pool of cluster-codellama.yaml fits on some node type of each cluster."""
    cfg = cfgmod.load(REPO / "configs" / "cluster-codellama.yaml")
    pools = (cfg.ray.training_pool, cfg.ray.generation_pool, cfg.ray.judge_pool)
    for path in AUTOSCALER:
        types = yaml.safe_load(path.read_text())["available_node_types"].values()
        for pool in pools:
            assert any(t["resources"].get("CPU", 0) >= pool.num_cpus
                       and t["resources"].get("GPU", 0) >= pool.num_gpus for t in types), \
                f"{path.name}: no node type fits {pool}"


def test_rayjob_manifest_is_valid():
    """RayJob keys, a runtime env Ray accepts, GPU limits, shared volume, real entrypoint."""
    docs = list(yaml.safe_load_all(RAYJOB.read_text()))
    job = next(d for d in docs if d["kind"] == "RayJob")
    assert job["apiVersion"] == "ray.io/v1"
    spec = job["spec"]
    assert spec["shutdownAfterJobFinishes"] is True
    assert isinstance(spec["activeDeadlineSeconds"], int) and spec["activeDeadlineSeconds"] > 0
    module, config_rel = _entrypoint_targets(spec["entrypoint"])
    assert module == "cluster.driver"
    assert (REPO / config_rel).is_file(), f"{config_rel} missing"
    cfg = cfgmod.load(REPO / config_rel)
    from ray.runtime_env import RuntimeEnv

    runtime_env = yaml.safe_load(spec["runtimeEnvYAML"])
    assert isinstance(runtime_env, dict)
    RuntimeEnv(**runtime_env)  # raises on unknown or malformed fields
    cluster = spec["rayClusterSpec"]
    head = cluster["headGroupSpec"]["template"]["spec"]
    groups = cluster["workerGroupSpecs"]
    gpu_groups = [g for g in groups for c in g["template"]["spec"]["containers"]
                  if c["resources"]["limits"].get("nvidia.com/gpu", 0) >= 1]
    assert gpu_groups
    gpus = sum(g["replicas"] for g in gpu_groups)
    assert gpus >= cfg.ray.training_pool.size * cfg.ray.training_pool.num_gpus
    claims = {d["metadata"]["name"] for d in docs if d["kind"] == "PersistentVolumeClaim"}
    mount = "/mnt/shared"
    for pod in [head] + [g["template"]["spec"] for g in groups]:
        vols = {v["name"]: v for v in pod["volumes"]}
        mounts = [m for c in pod["containers"] for m in c.get("volumeMounts", [])]
        shared = [m for m in mounts if m["mountPath"] == mount]
        assert shared and vols[shared[0]["name"]]["persistentVolumeClaim"]["claimName"] in claims
        for c in pod["containers"]:
            assert _image_python(c["image"]) >= _min_python()
    for where in (cfg.run.runs_dir, cfg.storage.adapters, cfg.model.cache_dir):
        assert where.startswith(mount + "/"), f"{where} is not on the shared volume"


def test_driver_module_is_the_entrypoint_everywhere():
    """Job submission and the manifests start the same driver module, which exists."""
    from cluster import jobs

    assert jobs.DRIVER_MODULE == "cluster.driver"
    if not _module_path(jobs.DRIVER_MODULE).is_file():
        pytest.fail("cluster/driver.py missing: every deploy target starts it")


def _floors(requirements) -> dict:
    """{package: lowest version allowed} of requirement strings with a >= floor."""
    from packaging.requirements import Requirement

    out = {}
    for text in requirements:
        req = Requirement(text)
        floors = [s.version for s in req.specifier if s.operator == ">="]
        if floors:
            out[req.name.lower()] = floors[0]
    return out


def test_version_floors_match_the_code_everywhere():
    """transformers >= 4.56 where from_pretrained(dtype=) is used; the KubeRay pip list has
    pyproject's floors; the pinned versions satisfy them; Modal installs from pyproject."""
    from packaging.version import Version

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    floors = _floors(project["dependencies"])
    uses_dtype = [p for p in (REPO / "coral").rglob("*.py")
                  if re.search(r"from_pretrained\([^)]*\bdtype=", p.read_text(), re.S)]
    assert uses_dtype and Version(floors["transformers"]) >= Version("4.56")
    runtime_env = yaml.safe_load(next(d for d in yaml.safe_load_all(RAYJOB.read_text())
                                      if d["kind"] == "RayJob")["spec"]["runtimeEnvYAML"])
    pip = _floors(runtime_env["pip"])
    wanted = {name: v for name, v in floors.items() if name != "ray"}   # the image's Ray
    assert pip == wanted
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.strip().lower()] = version.strip()
    for name, floor in floors.items():
        if name in pins:
            assert Version(pins[name]) >= Version(floor), (name, pins[name], floor)
    assert "pip_install_from_pyproject" in (REPO / "cluster" / "modal_app.py").read_text()


def test_hf_home_is_on_persistent_storage_everywhere():
    """Downloaded weights (13.5 GB for CodeLlama-7B) live on the shared volume, not on each
    node's disk for each start; the RayJob sets them on the pods, not in the job's
    runtime_env (the driver forwards them; Ray refuses to merge the same variable twice)."""
    from cluster.local import WORKER_ENV

    for path in AUTOSCALER:
        options = yaml.safe_load(path.read_text())["docker"]["run_options"]
        assert "--env HF_HOME=/mnt/shared/huggingface" in options, path.name
    job = next(d for d in yaml.safe_load_all(RAYJOB.read_text()) if d["kind"] == "RayJob")
    env_vars = yaml.safe_load(job["spec"]["runtimeEnvYAML"]).get("env_vars", {})
    assert not set(env_vars) & set(WORKER_ENV)
    cluster = job["spec"]["rayClusterSpec"]
    pods = [cluster["headGroupSpec"]["template"]["spec"]] + [
        g["template"]["spec"] for g in cluster["workerGroupSpecs"]]
    for pod in pods:
        for container in pod["containers"]:
            env = {e["name"]: e["value"] for e in container.get("env", [])}
            assert env.get("HF_HOME", "").startswith("/mnt/shared/"), container["name"]
            assert env.get("CORAL_QUIXBUGS") == "/mnt/shared/QuixBugs"
    from cluster.modal_app import MOUNT, hf_home

    assert hf_home(MOUNT, 1).startswith(MOUNT + "/") and not hf_home(MOUNT, 2).startswith(MOUNT)
