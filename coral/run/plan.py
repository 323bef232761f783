"""The plan of a run: what every actor takes (CPUs, GPUs, GPU memory) against the cluster.

Pure: no Ray, no torch. `make_plan(cfg, cluster)` returns one JSON-able dict with `fits`, one
entry per actor and `problems` (one line each); `coral config check --plan`, `coral run`,
`coral submit` and `coral modal run` all call it before anything starts, because a pool that
cannot be placed waits forever and a GPU actor that runs out of memory ends the run (and a
resumed run retrains the same genome and fails again).

GPU memory per actor, in GiB, from the model's shape (`model_shape`):
- weights: parameters x bytes of the weight dtype;
- training: the largest heavy-gene choice (highest r, widest target_modules, DoRA if allowed)
  as fp32 adapter + gradient + two AdamW moments (16 B per parameter); activations at
  batch_size x max_length tokens, with and without gradient checkpointing (the one the config
  resolves to counts); the logits and their loss (12 B per token per vocabulary entry);
- generation: max_resident_adapters of that largest adapter in the weight dtype; the KV
  cache at batch_size x (longest prompt + largest token budget); the prefill's workspace;
- 1.5 GiB for the CUDA context and the allocator's slack.
Activation bytes are calibrated on one CodeLlama-width layer measured at 8 x 768 tokens (issue
22: 24 GiB LoRA q,v; 51 GiB LoRA 7 modules; 91 GiB DoRA 7 modules, whole model): per token
and layer 5.1 B x hidden + 6 B x intermediate, plus 5.4 B per input feature of each adapted
module (the adapter path keeps its input), plus, for DoRA, 6.6 B per weight element of each
adapted module (DoRA normalises the full adapted weight, per layer, whatever the tokens).
With checkpointing one layer is live at a time and every layer keeps only its input.

An actor's budget is min(num_gpus, 1) x the card: actors sharing a GPU (num_gpus 0.5) must
each fit in their share, and one actor uses one device. The card is the smallest of
`ray.gpu_memory_gib` and the cluster's accelerator. Placement is first fit of the actors
(GPU actors first, then by size) onto the cluster's nodes (`ClusterShape`, read from a
cluster definition by cluster/definitions.py, or the local machine).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from coral.config import Config, ModelConfig

GIB = 2**30
OVERHEAD_GIB = 1.5
ADAM_BYTES = 16            # fp32 parameter + gradient + two moments
LOGIT_BYTES = 12           # bf16 logits, their fp32 copy, log-softmax and its gradient
ACT_HIDDEN_BYTES = 5.1     # per token, layer and hidden unit (norms, attention)
ACT_INTERMEDIATE_BYTES = 6.0   # per token, layer and MLP unit (gate, act, up outputs)
ACT_ADAPTER_BYTES = 5.4    # per token, layer and input feature of an adapted module
DORA_WEIGHT_BYTES = 6.6    # per weight element of a DoRA-adapted module, per layer
# The longest QuixBugs prompt and buggy function in LLaMA tokens (issue 22); generation cuts
# prompts at generation.max_prompt_tokens.
LONGEST_PROMPT = 525
LONGEST_PROGRAM = 334
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class ModelShape:
    """The dimensions memory depends on (a LLaMA-style decoder), and where they came from."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    tied: bool
    source: str

    def params(self) -> int:
        """Parameters of the whole model."""
        per_layer = sum(i * o for i, o in map(self.dims, PROJECTIONS)) + 2 * self.hidden
        heads = 1 if self.tied else 2
        return self.layers * per_layer + heads * self.vocab * self.hidden + self.hidden

    def dims(self, module: str) -> tuple[int, int]:
        """(in, out) features of a projection."""
        h, kv = self.hidden, self.kv_heads * (self.hidden // self.heads)
        return {"q_proj": (h, h), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (h, h),
                "gate_proj": (h, self.intermediate), "up_proj": (h, self.intermediate),
                "down_proj": (self.intermediate, h)}[module]

    def kv_bytes_per_token(self, dtype_bytes: int) -> int:
        """KV cache bytes one token costs (keys and values of every layer)."""
        return 2 * self.layers * self.kv_heads * (self.hidden // self.heads) * dtype_bytes


def _shape(d: dict, source: str) -> ModelShape:
    """A ModelShape from a transformers config.json-style mapping."""
    heads = d["num_attention_heads"]
    return ModelShape(d["hidden_size"], d["intermediate_size"], d["num_hidden_layers"], heads,
                      d.get("num_key_value_heads") or heads, d["vocab_size"],
                      bool(d.get("tie_word_embeddings", False)), source)


# Shapes of hub models for machines without the hub (the model's own config.json wins when
# it is in the local Hugging Face cache). CodeLlama's are those of coral/model/random_base.py.
KNOWN_SHAPES = {
    "codellama/codellama-7b": dict(hidden_size=4096, intermediate_size=11008,
                                   num_hidden_layers=32, num_attention_heads=32,
                                   num_key_value_heads=32, vocab_size=32016),
    "codellama/codellama-13b": dict(hidden_size=5120, intermediate_size=13824,
                                    num_hidden_layers=40, num_attention_heads=40,
                                    num_key_value_heads=40, vocab_size=32016),
    "codellama/codellama-34b": dict(hidden_size=8192, intermediate_size=22016,
                                    num_hidden_layers=48, num_attention_heads=64,
                                    num_key_value_heads=8, vocab_size=32000),
}
SMOLLM2_SHAPE = dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                     num_attention_heads=9, num_key_value_heads=3, vocab_size=49152,
                     tie_word_embeddings=True)
SMOLLM2_VOCAB = 49152      # the tokenizer random:<shape> and tiny models use


def _hub_config(repo: str) -> Optional[dict]:
    """config.json of a hub model from the local Hugging Face cache (never the network)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    path = try_to_load_from_cache(repo, "config.json")
    return json.loads(Path(path).read_text()) if isinstance(path, str) else None


def model_shape(mcfg: ModelConfig) -> Optional[ModelShape]:
    """The shape of `model.base`, None when it cannot be known here (a .gguf, an unknown id)."""
    from coral.model import random_base

    base = mcfg.base
    if base.startswith(random_base.PREFIX):
        name = base[len(random_base.PREFIX):]
        d = dict(random_base.SHAPES[name])
        d["vocab_size"] = random_base.vocab_size(name, SMOLLM2_VOCAB)
        return _shape(d, f"{base} (coral/model/random_base.py)")
    if base == "tiny":
        return _shape(dict(random_base.SHAPES["tiny"], vocab_size=SMOLLM2_VOCAB), "tiny")
    if base == "smollm2":
        return _shape(SMOLLM2_SHAPE, "SmolLM2-135M-Instruct")
    folder = Path(base).expanduser()
    if (folder / "config.json").is_file():
        return _shape(json.loads((folder / "config.json").read_text()), f"{folder}/config.json")
    if base.endswith(".gguf"):
        return None
    cached = _hub_config(base)
    if cached is not None:
        return _shape(cached, f"{base} config.json (local Hugging Face cache)")
    family = base.lower().replace("-python-hf", "").replace("-instruct-hf", "")
    family = family.replace("-hf", "")
    if family in KNOWN_SHAPES:
        return _shape(KNOWN_SHAPES[family], f"{base} (coral.run.plan.KNOWN_SHAPES: no hub here)")
    return None


# --------------------------------------------------------------------------- the cluster

# GiB an accelerator reports (nvidia-smi's total), matched by name, most specific first.
ACCELERATORS = (
    ("H200", 139.8), ("H100", 79.6), ("A100-80GB", 79.3), ("A100-SXM4-80GB", 79.3),
    ("A100-PCIE-80GB", 79.3), ("A100", 39.6), ("L40S", 44.5), ("A10G", 22.5), ("L4", 22.0),
    ("A10", 22.0), ("T4", 14.7), ("V100", 15.8),
)


def card_gib(accelerator: str) -> Optional[float]:
    """GiB of an accelerator named like `H100`, `A100-80GB`, `NVIDIA-A100-SXM4-80GB`, `l40s`."""
    name = accelerator.upper().replace("NVIDIA-", "").replace("NVIDIA ", "")
    name = name.replace("TESLA-", "").replace(" ", "-").replace("_", "-")
    for known, gib in ACCELERATORS:
        if name.startswith(known) or name == known:
            return gib
    return None


@dataclass(frozen=True)
class NodeType:
    """A kind of node: resources Ray sees on each, how many there may be, its card."""

    name: str
    cpus: float
    gpus: float
    count: int
    accelerator: Optional[str] = None
    memory_gib: Optional[float] = None     # measured (a local GPU); else from `accelerator`

    @property
    def card(self) -> Optional[float]:
        if self.memory_gib is not None:
            return self.memory_gib
        return card_gib(self.accelerator) if self.accelerator else None


@dataclass(frozen=True)
class ClusterShape:
    """The nodes a run may use (at most: autoscalers' max workers)."""

    source: str
    nodes: tuple[NodeType, ...] = field(default_factory=tuple)

    def totals(self) -> dict:
        return {"cpus": sum(n.cpus * n.count for n in self.nodes),
                "gpus": sum(n.gpus * n.count for n in self.nodes)}


# --------------------------------------------------------------------------- memory

def _gib(n: float) -> float:
    return round(n / GIB, 2)


def dtype_bytes(mcfg: ModelConfig) -> int:
    """Bytes per weight: bf16 on cuda unless set (what coral.model.loading picks)."""
    if mcfg.dtype == "auto":
        return 4 if mcfg.device == "cpu" else 2
    return 4 if mcfg.dtype == "float32" else 2


def largest_adapter(cfg: Config, shape: ModelShape) -> dict:
    """The heavy-gene choice that costs the most: highest r, widest modules, DoRA if allowed."""
    genes = cfg.search.genes
    r = max(genes.r)
    modules = max(genes.target_modules,
                  key=lambda ms: sum(sum(shape.dims(m)) for m in set(ms) if m in PROJECTIONS))
    modules = tuple(m for m in dict.fromkeys(modules) if m in PROJECTIONS)
    dora = any(genes.use_dora)
    params = shape.layers * sum(r * sum(shape.dims(m)) + (shape.dims(m)[1] if dora else 0)
                                for m in modules)
    return {"r": r, "target_modules": list(modules), "use_dora": dora, "params": params}


def _activations(shape: ModelShape, adapter: dict, tokens: int) -> dict:
    """Kept activation bytes of a training step, without and with gradient checkpointing."""
    mods = adapter["target_modules"]
    per_token = (ACT_HIDDEN_BYTES * shape.hidden + ACT_INTERMEDIATE_BYTES * shape.intermediate
                 + ACT_ADAPTER_BYTES * sum(shape.dims(m)[0] for m in mods))
    dora = DORA_WEIGHT_BYTES * sum(math.prod(shape.dims(m)) for m in mods) \
        if adapter["use_dora"] else 0.0
    layer = per_token * tokens + dora
    boundaries = 2 * shape.hidden * tokens * shape.layers   # each layer's bf16 input
    return {"off": shape.layers * layer, "on": boundaries + layer}


def training_memory(cfg: Config, shape: ModelShape) -> dict:
    """GiB of a training actor: weights, adapter state, activations (both ways), logits."""
    db, tcfg = dtype_bytes(cfg.model), cfg.training
    adapter = largest_adapter(cfg, shape)
    tokens = tcfg.batch_size * tcfg.max_length
    acts = _activations(shape, adapter, tokens)
    on = tcfg.checkpointing("cpu" if cfg.model.device == "cpu" else "cuda")
    parts = {"weights": shape.params() * db, "adapter_and_optimizer": adapter["params"] * ADAM_BYTES,
             "activations": acts["on" if on else "off"], "logits": tokens * shape.vocab * LOGIT_BYTES,
             "overhead": OVERHEAD_GIB * GIB}
    out = {k: _gib(v) for k, v in parts.items()}
    out.update(total=_gib(sum(parts.values())), gradient_checkpointing=on,
               activations_checkpointed=_gib(acts["on"]), activations_full=_gib(acts["off"]),
               tokens_per_step=tokens, largest_adapter=adapter)
    return out


def generation_memory(cfg: Config, shape: ModelShape) -> dict:
    """GiB of a generation actor: weights, resident adapters, KV cache, prefill workspace."""
    db, gcfg = dtype_bytes(cfg.model), cfg.generation
    adapter = largest_adapter(cfg, shape)
    prompt = min(gcfg.max_prompt_tokens, LONGEST_PROMPT)
    budget = cfg.knobs.max_new_tokens + math.ceil(cfg.knobs.max_new_tokens_factor.high
                                                  * LONGEST_PROGRAM)
    rows = gcfg.batch_size * (prompt + budget)
    parts = {"weights": shape.params() * db,
             "adapters": gcfg.max_resident_adapters * adapter["params"] * db,
             "kv_cache": rows * shape.kv_bytes_per_token(db),
             "workspace": gcfg.batch_size * prompt * (2 * shape.intermediate + 4 * shape.hidden) * db,
             "overhead": OVERHEAD_GIB * GIB}
    out = {k: _gib(v) for k, v in parts.items()}
    out.update(total=_gib(sum(parts.values())), batch_size=gcfg.batch_size,
               tokens_per_row=prompt + budget, prompt_tokens=prompt, token_budget=budget)
    return out


# --------------------------------------------------------------------------- the plan

PARTS = ("weights", "adapter_and_optimizer", "activations", "logits", "adapters", "kv_cache",
         "workspace", "overhead")
POOLS = (("training", "training_pool"), ("generation", "generation_pool"),
         ("judge", "judge_pool"))
EPS = 1e-9


def _card(cfg: Config, cluster: Optional[ClusterShape]) -> tuple[Optional[float], str]:
    """GiB per GPU and where that came from: the smallest of the config's and the cluster's."""
    found = []
    if cfg.ray.gpu_memory_gib is not None:
        found.append((cfg.ray.gpu_memory_gib, "ray.gpu_memory_gib"))
    for node in cluster.nodes if cluster else ():
        if node.gpus > 0 and node.card is not None:
            found.append((node.card, f"{cluster.source}: {node.name} "
                                     f"({node.accelerator or 'measured'})"))
    return min(found) if found else (None, "unknown")


def _place(actors: list[dict], cluster: ClusterShape) -> None:
    """First fit of the actors (GPU actors first, then larger first) onto the cluster's
    nodes; sets each actor's `node` (None: no room)."""
    free = [[f"{n.name}-{i}", n.cpus, n.gpus] for n in cluster.nodes for i in range(n.count)]
    for actor in sorted(actors, key=lambda a: (-a["num_gpus"], -a["num_cpus"])):
        actor["node"] = None
        for slot in free:
            if slot[1] + EPS >= actor["num_cpus"] and slot[2] + EPS >= actor["num_gpus"]:
                slot[1] -= actor["num_cpus"]
                slot[2] -= actor["num_gpus"]
                actor["node"] = slot[0]
                break


def _memory_problem(key: str, mem: dict, budget: float, gpus: float, card: float) -> str:
    """One line: which pool does not fit, by how much, and what would help."""
    big = sorted(((mem[k], k) for k in PARTS if k in mem), reverse=True)[:3]
    hint = ("training.gradient_checkpointing: on, a smaller training.batch_size or "
            "max_length" if key == "training_pool" else
            "a smaller generation.batch_size or max_resident_adapters")
    return (f"ray.{key}: each actor needs ~{mem['total']:g} GiB of GPU memory ("
            + ", ".join(f"{k} {v:g}" for v, k in big) + f") but has {budget:g} GiB "
            f"(min(num_gpus {gpus:g}, 1) x {card:g} GiB card); try {hint}, or a larger card")


def _actor_rows(cfg: Config, mem: dict, card: Optional[float]) -> tuple[list[dict], list[str]]:
    """One entry per actor, and the problems of the pools' GPU memory and devices."""
    rows, problems = [], []
    for role, key in POOLS:
        pool = getattr(cfg.ray, key)
        need = mem.get(role)
        on_gpu = role != "judge" and cfg.model.device != "cpu" and pool.num_gpus > 0
        budget = round(min(pool.num_gpus, 1.0) * card, 2) if on_gpu and card else None
        fits = not (on_gpu and need and budget is not None and need["total"] > budget)
        if role != "judge" and cfg.model.device == "cuda" and pool.num_gpus == 0:
            problems.append(f"ray.{key}.num_gpus is 0 but model.device is cuda: an actor "
                            "without a GPU sees none (CUDA_VISIBLE_DEVICES is empty)")
            fits = False
        elif on_gpu and need and budget is not None and need["total"] > budget:
            problems.append(_memory_problem(key, need, budget, pool.num_gpus, card))
        for i in range(pool.size):
            rows.append({"name": f"{role}-{i}", "pool": f"ray.{key}", "num_cpus": pool.num_cpus,
                         "num_gpus": pool.num_gpus,
                         "gpu_memory_gib": need["total"] if on_gpu and need else None,
                         "budget_gib": budget, "fits": fits})
    return rows, problems


def make_plan(cfg: Config, cluster: Optional[ClusterShape] = None) -> dict:
    """The plan of `cfg` on `cluster` (None: the cluster is not known here); see the module
    docstring. `fits` is true when `problems` is empty."""
    shape = model_shape(cfg.model)
    card, card_source = _card(cfg, cluster)
    mem = {} if shape is None else {"training": training_memory(cfg, shape),
                                     "generation": generation_memory(cfg, shape)}
    actors, problems = _actor_rows(cfg, mem, card)
    notes = []
    gpu_actors = [a for a in actors if a["num_gpus"] > 0 and cfg.model.device != "cpu"]
    if gpu_actors and shape is None:
        notes.append(f"model.base {cfg.model.base}: shape unknown here, GPU memory not estimated")
    if gpu_actors and shape is not None and card is None:
        problems.append("GPU memory per card unknown: set ray.gpu_memory_gib (GiB of the "
                        "smallest GPU the pools may use) or give the cluster definition")
    needs = {"cpus": sum(a["num_cpus"] for a in actors),
             "gpus": sum(a["num_gpus"] for a in actors)}
    if cluster is None:
        notes.append("cluster not given: CPU/GPU totals and placement not checked")
    else:
        problems += _cluster_problems(actors, needs, cluster)
    return {"config": cfg.source, "fits": not problems, "problems": problems, "notes": notes,
            "model": {"base": cfg.model.base, "shape": None if shape is None else shape.source,
                      "parameters": None if shape is None else shape.params()},
            "card_gib": card, "card_source": card_source,
            "cluster": None if cluster is None else {"source": cluster.source,
                                                     **cluster.totals()},
            "needs": needs, "memory": mem, "actors": actors}


def _cluster_problems(actors: list[dict], needs: dict, cluster: ClusterShape) -> list[str]:
    """Totals against the cluster's, then actors no node has room for (one line per pool)."""
    have, problems = cluster.totals(), []
    for what in ("cpus", "gpus"):
        if needs[what] > have[what] + EPS:
            problems.append(f"the pools need {needs[what]:g} {what.upper()[:-1]}s, "
                            f"{cluster.source} has {have[what]:g}")
    _place(actors, cluster)
    unplaced: dict[str, int] = {}
    for actor in actors:
        if actor["node"] is None:
            actor["fits"] = False
            unplaced[actor["pool"]] = unplaced.get(actor["pool"], 0) + 1
    for pool, n in unplaced.items():
        problems.append(f"{pool}: {n} actor(s) find no node with room on {cluster.source} "
                        "(first fit, GPU actors first)")
    return problems

