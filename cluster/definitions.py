"""The clusters a run may go to, as the plan's `ClusterShape` (coral.run.plan): no Ray, no cloud.

- Ray autoscaler files (cluster/ray-aws.yaml, ray-gcp.yaml): every node type's `resources`
  x its max_workers (the head once); the card from the instance or machine type.
- KubeRay RayJob (cluster/kuberay-rayjob.yaml): the head and every worker group's
  maxReplicas; CPUs from `num-cpus` or the container's cpu limit, GPUs from
  `nvidia.com/gpu`; the card from a nodeSelector value (nvidia.com/gpu.product: ...).
- Modal (`modal`, or cluster/modal_app.py): `nodes` containers of `gpu` (``H100:8``) with the
  CPUs Ray is told (cluster.modal_app.ray_cpus).
- This machine (`coral run` with a private Ray): ray.num_cpus (or every core) and the GPUs
  nvidia-smi lists, with their memory (torch is not asked: that would start CUDA here).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Optional

import yaml

from coral.config import RayConfig
from coral.run.plan import ClusterShape, NodeType

# Instance / machine type prefixes of the clouds' GPU families and the card each carries.
INSTANCE_CARDS = (
    ("p5e.", "H200"), ("p5.", "H100"), ("p4de.", "A100-80GB"), ("p4d.", "A100"),
    ("g6e.", "L40S"), ("g6.", "L4"), ("g5.", "A10G"), ("g4dn.", "T4"),
    ("a3-", "H100"), ("a2-ultragpu", "A100-80GB"), ("a2-highgpu", "A100"), ("a2-megagpu", "A100"),
    ("g2-", "L4"),
)


def instance_card(instance: str) -> Optional[str]:
    """The accelerator of a cloud instance type, None for a CPU type."""
    for prefix, card in INSTANCE_CARDS:
        if instance.startswith(prefix):
            return card
    return None


def _autoscaler(doc: dict, source: str) -> ClusterShape:
    nodes = []
    for name, spec in doc["available_node_types"].items():
        res = spec.get("resources") or {}
        node_config = spec.get("node_config") or {}
        instance = node_config.get("InstanceType") or node_config.get("machineType") or ""
        count = 1 if name == doc["head_node_type"] else int(spec.get("max_workers", 0))
        nodes.append(NodeType(name, float(res.get("CPU", 0)), float(res.get("GPU", 0)), count,
                              instance_card(instance) if res.get("GPU") else None))
    return ClusterShape(source, tuple(nodes))


def _cpu_quantity(text: str) -> float:
    """A Kubernetes cpu quantity ("8", "500m") in CPUs."""
    text = str(text)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def _kuberay_group(name: str, group: dict, count: int) -> NodeType:
    pod = group["template"]["spec"]
    limits = pod["containers"][0]["resources"]["limits"]
    params = group.get("rayStartParams") or {}
    cpus = _cpu_quantity(params.get("num-cpus", limits.get("cpu", 0)))
    gpus = float(params.get("num-gpus", limits.get("nvidia.com/gpu", 0)))
    selector = [str(v) for v in (pod.get("nodeSelector") or {}).values()]
    from coral.run.plan import card_gib

    card = next((v for v in selector if card_gib(v) is not None), None)
    return NodeType(name, cpus, gpus, count, card if gpus else None)


def _kuberay(doc: dict, source: str) -> ClusterShape:
    spec = doc["spec"]["rayClusterSpec"]
    nodes = [_kuberay_group("head", spec["headGroupSpec"], 1)]
    for group in spec["workerGroupSpecs"]:
        count = int(group.get("maxReplicas", group.get("replicas", 0)))
        nodes.append(_kuberay_group(group["groupName"], group, count))
    return ClusterShape(source, tuple(nodes))


def modal_cluster(gpu: str, nodes: int, ray_cpus: float) -> ClusterShape:
    """`nodes` Modal containers of `gpu` (``H100:8``, ``L4``), each giving Ray `ray_cpus`."""
    name, _, count = gpu.partition(":")
    gpus = float(count or 1)
    return ClusterShape(f"modal {gpu} x {nodes}",
                        (NodeType("container", float(ray_cpus), gpus, nodes, name),))


def read_cluster(path: str) -> ClusterShape:
    """The ClusterShape of a cluster definition file (or `modal`: the Modal app's SPEC)."""
    if path == "modal" or Path(path).name == "modal_app.py":
        from cluster.modal_app import SPEC, ray_cpus

        return modal_cluster(SPEC["gpu"], SPEC["nodes"], ray_cpus(SPEC["cpu"]))
    docs = [d for d in yaml.safe_load_all(Path(path).read_text()) if isinstance(d, dict)]
    source = Path(path).name
    for doc in docs:
        if doc.get("kind") == "RayJob":
            return _kuberay(doc, source)
        if "available_node_types" in doc:
            return _autoscaler(doc, source)
    raise ValueError(f"{path}: neither a Ray autoscaler file, a KubeRay RayJob nor `modal`")


def _local_gpus() -> list[tuple[str, float]]:
    """(name, GiB) of each GPU nvidia-smi lists, honouring CUDA_VISIBLE_DEVICES."""
    if shutil.which("nvidia-smi") is None:
        return []
    out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total",
                          "--format=csv,noheader,nounits"], capture_output=True, text=True,
                         timeout=30)
    rows = [line.rsplit(",", 1) for line in out.stdout.splitlines() if "," in line]
    gpus = [(name.strip(), round(float(mib) / 1024, 1)) for name, mib in rows
            if re.fullmatch(r"\s*\d+(\.\d+)?\s*", mib)]
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        keep = [int(i) for i in visible.split(",") if i.strip().isdigit()]
        gpus = [g for i, g in enumerate(gpus) if i in keep]
    return gpus


def local_cluster(ray_cfg: RayConfig) -> ClusterShape:
    """This machine as the private Ray of `coral run` would see it."""
    gpus = _local_gpus()
    cpus = float(ray_cfg.num_cpus or os.cpu_count() or 1)
    name = gpus[0][0] if gpus else None
    memory = min(g[1] for g in gpus) if gpus else None
    return ClusterShape("this machine", (NodeType("local", cpus, float(len(gpus)), 1, name,
                                                  memory),))
