"""Config of the run: its name and seed, where Ray runs and how big the pools are, storage.

`Config` (the whole file) is declared here too: one section per box, in the order users
usually write them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from coral.config.fields import setting
from coral.config.judge import DatasetConfig, SandboxConfig
from coral.config.model import GenerationConfig, ModelConfig, TrainingConfig
from coral.config.search import KnobRanges, SearchConfig


@dataclass(frozen=True)
class RunConfig:
    """Name, seed and directory of a run, and its held-out check."""

    name: str = setting("coral", doc="run directory name under runs_dir")
    seed: int = setting(0, ge=0, doc="master seed: same seed + same config = same search")
    runs_dir: str = setting("runs", doc="where run directories are created")
    held_out_eval: bool = setting(True, doc="re-score the best genomes on held-out problems")
    held_out_top_k: int = setting(3, ge=1, doc="how many of the best genomes are re-scored")


@dataclass(frozen=True)
class PoolConfig:
    """Size of one pool of actors and the resources each actor takes."""

    size: int = setting(1, ge=1, doc="number of actors")
    num_cpus: float = setting(1.0, ge=0.0, doc="CPUs reserved per actor")
    num_gpus: float = setting(0.0, ge=0.0, doc="GPUs per actor (fractions share a GPU)")


@dataclass(frozen=True)
class RayConfig:
    """Where Ray runs, the pools' shapes, work in flight and fault-tolerance options."""

    address: Optional[str] = setting(
        None, doc="null: start a private local Ray; auto: the cluster this runs in; or an address")
    num_cpus: Optional[int] = setting(None, doc="CPUs of a private local Ray (null: all)")
    gpu_memory_gib: Optional[float] = setting(
        None, gt=0.0, doc="GiB of the smallest GPU the pools may land on; the plan (`coral "
        "config check --plan`, run before every start) checks each GPU actor's estimated "
        "memory against it (null: the cluster definition's accelerator, or the local GPU)")
    max_in_flight: int = setting(16, ge=1, doc="cap on tasks submitted and not yet finished")
    max_restarts: int = setting(3, ge=-1, doc="Ray actor restarts after a crash (-1: forever)")
    max_task_retries: int = setting(3, ge=-1, doc="re-runs of a call whose actor died")
    training_pool: PoolConfig = setting(PoolConfig(), doc="actors that train adapters")
    generation_pool: PoolConfig = setting(PoolConfig(), doc="actors that generate fixes")
    judge_pool: PoolConfig = setting(PoolConfig(size=2), doc="CPU actors that run the sandbox")


@dataclass(frozen=True)
class StorageConfig:
    """Where trained adapters are kept."""

    adapters: Optional[str] = setting(
        None, doc="the run's persistent adapter store, written once per adapter by the cache "
                  "on the driver's node (null: <model cache>/adapters); other nodes never "
                  "read it, so it need not be shared")
    max_gb: Optional[float] = setting(
        None, gt=0.0, doc="GiB the adapter store may hold: after each training the least "
        "recently used adapters are removed until it fits, never one a run that is not "
        "finished uses (null: no limit; `coral cache gc` prunes by hand)")
    local_adapters: Optional[str] = setting(
        None, doc="directory under which each generation actor keeps the adapters it fetched "
                  "through Ray's object store, on its own node's disk (null: the system "
                  "temporary directory)")
    local_max_adapters: int = setting(
        32, ge=1, doc="adapters each generation actor keeps in its local directory, least "
                      "recently used evicted first (>= generation.max_resident_adapters "
                      "avoids fetching an adapter again while it is resident)")


@dataclass(frozen=True)
class Config:
    """The whole run configuration; `source` is the file it came from."""

    run: RunConfig = setting(RunConfig(), doc="name, seed, run directory, held-out check")
    dataset: DatasetConfig = setting(DatasetConfig(), doc="QuixBugs problems and their split")
    search: SearchConfig = setting(SearchConfig(), doc="the evolutionary search")
    knobs: KnobRanges = setting(KnobRanges(), doc="ranges of the sampling knobs")
    model: ModelConfig = setting(ModelConfig(), doc="the base model")
    training: TrainingConfig = setting(TrainingConfig(), doc="adapter training")
    generation: GenerationConfig = setting(GenerationConfig(), doc="generation of fixes")
    sandbox: SandboxConfig = setting(SandboxConfig(), doc="limits of the judge's sandbox")
    ray: RayConfig = setting(RayConfig(), doc="Ray and its pools")
    storage: StorageConfig = setting(StorageConfig(), doc="adapter storage")
    source: str = field(default="<defaults>", compare=False)
