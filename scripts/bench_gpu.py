"""GPU benchmark at CodeLlama-7B size: training, generation on real prompts, reloads, swaps.

No Ray (and no datasets or gguf) is imported: it runs on a bare GPU box with torch,
transformers, peft and safetensors. One JSON object per measurement on stdout (and --out),
the summary last. Every ratio is measured side by side in this one process. Any phase that
fails, an out-of-memory step included, is listed in the summary's `failed` and the exit
status is 1: a figure measured after a fallback is never reported as the plain one.

    python scripts/bench_gpu.py            # random:codellama-7b, CUDA bf16 (the GPU check)
    python scripts/bench_gpu.py --quick    # random:tiny on CPU in under a minute (CI)

Measurements (a random model of the real shape: its timings are the real model's):
- train (lora_qv, lora_all, dora_all: r = the largest r gene of configs/cluster-codellama.yaml,
  on q,v or on all seven projections): seconds per AdamW step of coral.model.training.fit at
  the cluster shape (batch 8 x 768 tokens, every row full length: the worst case), with
  gradient checkpointing as the trainer resolves it (training.gradient_checkpointing auto: on
  for CUDA); on CUDA also lora_qv without it (`_full`). Every row says which
  (`gradient_checkpointing`). An out-of-memory step is a failure; the same step is then
  measured checkpointed, in its own row with `gradient_checkpointing: true`. Peak memory is
  the allocator's reserved peak (what the card must hold) and its allocated peak.
- generation on real QuixBugs prompts (from $CORAL_QUIXBUGS, every problem in turn) with the
  cluster config's largest token budget (max_new_tokens + factor x the buggy function's
  tokens) and the answer-end stopping of production (a random model rarely stops, so rows
  use their whole budget: the worst case):
  * the production case: 32 rows of ONE adapter (a genome's requests), run with the adapter
    active (what the Generator does) against the same batch through peft's per-row
    `adapter_names` (`active_vs_adapter_names` = names / active seconds; > 1: active wins),
    for a LoRA all-7 adapter; and the DoRA all-7 adapter active;
  * `batched_vs_sequential`: seconds per request of `--single` requests alone over the batch's;
  * mixed adapters (coalesced genomes): 32 rows over 4 LoRA adapters (q,v and all-7) at a
    fixed 64 tokens, one mixed batch vs one batch per adapter (`mixed_vs_grouped` = grouped /
    mixed seconds; < 1: grouping is faster).
- resident_vs_reload: seconds of one request served by building a Generator from a local
  safetensors copy of the base (load base + adapter, generate alone) over the resident
  Generator's seconds for one request alone (same budget).
- adapter_swap: `Generator.activate` (load from disk, checksum, make active) of 48 adapters
  in turn with 16 resident (LRU evicting): ms per swap, first 16 vs last 16, and set_adapter
  of an already resident one.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchkit import Bench, free, gib, timed  # noqa: E402  (scripts/benchkit.py)

from coral import config as cfgmod  # noqa: E402
from coral.adapters.store import checksum_dir  # noqa: E402
from coral.messages import AdapterRef, GenerationRequest  # noqa: E402
from coral.model.generation import Generator  # noqa: E402
from coral.model.loading import load_base  # noqa: E402
from coral.model.training import fit, gradient_checkpointing, lora_config  # noqa: E402
from coral.search.genome import HeavyGenes  # noqa: E402
from coral.search.knobs import CheapKnobs  # noqa: E402

ALL_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
QV = ("q_proj", "v_proj")
CLUSTER_CONFIG = ROOT / "configs" / "cluster-codellama.yaml"
# (name, target modules, DoRA) of the adapters trained and served
VARIANTS = (("lora_qv", QV, False), ("lora_all", ALL_MODULES, False),
            ("dora_all", ALL_MODULES, True))
MIXED_TOKENS = 64


@dataclasses.dataclass(frozen=True)
class Shape:
    """What one run measures: model, device, training and generation sizes."""

    base: str
    device: str
    dtype: str
    train_batch: int
    train_length: int
    train_steps: int          # timed steps (after one warm-up step)
    budget_tokens: int        # token budget: budget_tokens + budget_factor x program tokens
    budget_factor: float
    rank: int = 64
    requests: int = 32
    single: int = 2           # requests timed alone
    resident: int = 16
    swaps: int = 48
    mixed_tokens: int = MIXED_TOKENS


def full_shape() -> Shape:
    """The cluster's shape: its batch, its largest r and its largest token budget."""
    cluster = cfgmod.load(CLUSTER_CONFIG)
    return Shape("random:codellama-7b", "cuda", "bfloat16", cluster.training.batch_size,
                 cluster.training.max_length, 3, cluster.knobs.max_new_tokens,
                 cluster.knobs.max_new_tokens_factor.high, rank=max(cluster.search.genes.r))


# --quick only keeps the script from rotting: every phase runs, at the smallest sizes.
QUICK = Shape("random:tiny", "cpu", "float32", 2, 32, 1, 4, 0.0, rank=8, requests=16,
              single=2, resident=4, swaps=10, mixed_tokens=4)


def run_config(shape: Shape, cache_dir: Optional[str]) -> cfgmod.Config:
    """The run config the bench's Generator uses (LRU of `resident`, batch of `requests`)."""
    return cfgmod.from_dict({
        "model": {"base": shape.base, "device": shape.device, "dtype": shape.dtype,
                  "cache_dir": cache_dir},
        "generation": {"batch_size": shape.requests, "max_resident_adapters": shape.resident,
                       "max_prompt_tokens": 1024}})


def peaks(reset: bool = False) -> dict:
    """Reserved (what the card must hold) and allocated peak GiB since the last reset."""
    if not torch.cuda.is_available():
        return {"peak_reserved_gib": None, "peak_allocated_gib": None}
    out = {"peak_reserved_gib": gib(torch.cuda.max_memory_reserved()),
           "peak_allocated_gib": gib(torch.cuda.max_memory_allocated())}
    if reset:
        torch.cuda.reset_peak_memory_stats()
    return out


# --------------------------------------------------------------------------- training

def train_batch(shape: Shape, vocab: int) -> dict:
    """One full-length batch of random ids (every row `train_length` tokens, all labelled)."""
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (shape.train_batch, shape.train_length), generator=gen)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}


def time_training(bench: Bench, shape: Shape, loaded: tuple, variant: tuple,
                  checkpointing: bool, inject_oom: bool = False) -> dict:
    """Seconds per step (mean of the timed steps), projection, peak memory; one row."""
    from peft import get_peft_model

    name, modules, dora = variant
    model, tok, _ = loaded
    device, dtype = next(model.parameters()).device, next(model.parameters()).dtype
    genes = HeavyGenes(r=shape.rank, lora_alpha=2 * shape.rank, lora_dropout=0.05,
                       target_modules=modules, use_dora=dora)
    batch = train_batch(shape, len(tok))
    cluster_steps = max(cfgmod.load(CLUSTER_CONFIG).search.genes.steps)
    with gradient_checkpointing(model, checkpointing):
        peft_model = get_peft_model(model, lora_config(genes))
        try:
            peaks(reset=True)
            if inject_oom:   # --inject-oom: what a card too small for this step raises
                raise torch.cuda.OutOfMemoryError(f"injected out of memory ({name})")
            warm_s, _ = timed(lambda: fit(peft_model, [batch], None, device, dtype, 2e-4))
            total, _ = timed(lambda: fit(peft_model, [batch] * shape.train_steps, None,
                                         device, dtype, 2e-4))
        finally:
            peft_model.unload()
            free()
    per_step = total / shape.train_steps
    return bench.emit("train", variant=name, r=shape.rank, target_modules=len(modules),
                      use_dora=dora, batch_size=shape.train_batch, max_length=shape.train_length,
                      gradient_checkpointing=checkpointing,
                      seconds_per_step=round(per_step, 4), steps_timed=shape.train_steps,
                      warmup_step_seconds=round(warm_s, 3), cluster_steps=cluster_steps,
                      projected_seconds_per_adapter=round(per_step * cluster_steps, 1),
                      **peaks())


def training(bench: Bench, shape: Shape, loaded: tuple, inject: set) -> None:
    """Each variant as production trains it, lora_qv also without checkpointing on CUDA; an
    OOM is a failure, and the step is then measured checkpointed in a row that says so."""
    production = cfgmod.load(CLUSTER_CONFIG).training.checkpointing(shape.device)
    runs = [(v, production, v[0]) for v in VARIANTS]
    if production:
        runs.append((VARIANTS[0], False, VARIANTS[0][0] + "_full"))
    for variant, checkpointing, label in runs:
        error = None
        try:
            time_training(bench, shape, loaded, variant, checkpointing, label in inject)
            continue
        except torch.cuda.OutOfMemoryError as exc:
            error = f"out of memory: {str(exc)[:200]}"
        # Reported outside the except block: its traceback would keep the activations alive.
        free()
        bench.failed.append(f"train_{label}")
        bench.emit(f"train_{label}", error=error, gradient_checkpointing=checkpointing,
                   **peaks())
        if not checkpointing:
            bench.phase(f"train_{label}_checkpointed", lambda: time_training(
                bench, shape, loaded, variant, True))


# --------------------------------------------------------------------------- adapters

def make_adapter(shape: Shape, loaded: tuple, root: Path, i: int, modules: tuple,
                 dora: bool) -> AdapterRef:
    """One random adapter (r=16) saved as peft safetensors; its ref."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(1000 + i)
    cfg = LoraConfig(r=16, lora_alpha=32, target_modules=list(modules), use_dora=dora,
                     init_lora_weights=False, task_type="CAUSAL_LM")
    peft_model = get_peft_model(loaded[0], cfg)
    path = root / f"adapter{i:02d}"
    peft_model.save_pretrained(str(path), safe_serialization=True)
    peft_model.unload()
    return AdapterRef(f"bench{i:02d}", str(path), checksum_dir(path), use_dora=dora)


def make_adapters(shape: Shape, loaded: tuple, root: Path) -> dict:
    """{"lora": 4 LoRA adapters (q,v and all-7, two each), "dora": one DoRA all-7}."""
    lora = [make_adapter(shape, loaded, root, i, QV if i % 2 else ALL_MODULES, False)
            for i in range(4)]
    return {"lora": lora, "dora": [make_adapter(shape, loaded, root, 4, ALL_MODULES, True)]}


def copies(refs: list[AdapterRef], root: Path, n: int) -> list[AdapterRef]:
    """n adapters with distinct keys and folders, cycling over the weights of `refs`."""
    out = []
    for i in range(n):
        src = refs[i % len(refs)]
        path = root / f"copy{i:02d}"
        shutil.copytree(src.uri, path)
        out.append(dataclasses.replace(src, key=f"swap{i:02d}", uri=str(path)))
    return out


# --------------------------------------------------------------------------- generation

def quixbugs_programs() -> list:
    """Every QuixBugs problem ($CORAL_QUIXBUGS or the usual places), in name order."""
    from coral.judge.quixbugs import load_problems, resolve_path

    return sorted(load_problems(resolve_path(None)), key=lambda p: p.name)


def make_requests(shape: Shape, problems: list, refs: list[AdapterRef], n: int,
                  tokens: Optional[int] = None) -> list[GenerationRequest]:
    """n requests over the problems in turn and the adapters in turn, per-row knobs, the
    shape's token budget (or a fixed `tokens`)."""
    reqs = []
    for i in range(n):
        knobs = CheapKnobs(temperature=0.3 + 0.05 * (i % 8), top_p=0.85 + 0.01 * (i % 10),
                           top_k=20 + i, repetition_penalty=1.0 + 0.01 * (i % 5),
                           max_new_tokens=tokens or shape.budget_tokens,
                           max_new_tokens_factor=0.0 if tokens else shape.budget_factor)
        prob = problems[i % len(problems)]
        reqs.append(GenerationRequest(f"q{i}", f"g{i}", prob.name, prob.buggy_source,
                                      refs[i % len(refs)], knobs, seed=i))
    return reqs


@contextlib.contextmanager
def adapter_names_path(gen: Generator):
    """Run every batch through peft's per-row `adapter_names`, even a one-adapter batch (what
    the Generator did before it ran such batches active, and what mixed batches do)."""
    def names(batch, active_key):
        refs = list({r.adapter.key: r.adapter for r in batch}.values())
        gen.ensure_resident(refs)
        rows = [gen._resident[r.adapter.key] for r in batch]
        return gen._peft, {"adapter_names": rows}, contextlib.nullcontext()

    gen._adapter_context = names
    try:
        yield
    finally:
        del gen._adapter_context


def tokens_of(results: list) -> int:
    return sum(r.new_tokens for r in results)


def production_case(bench: Bench, shape: Shape, gen: Generator, problems: list,
                    adapters: dict) -> dict:
    """One adapter, 32 rows, real prompts and budgets: active vs adapter_names; DoRA active;
    single requests alone."""
    lora, dora = adapters["lora"][0], adapters["dora"][0]
    reqs = make_requests(shape, problems, [lora], shape.requests)
    gen.ensure_resident([lora, dora])
    gen.generate(make_requests(shape, problems, [lora, dora], 2, tokens=4))   # warm-up
    active_s, active = timed(lambda: gen.generate(reqs))
    with adapter_names_path(gen):
        names_s, named = timed(lambda: gen.generate(reqs))
    dora_reqs = make_requests(shape, problems, [dora], shape.requests)
    dora_s, dora_out = timed(lambda: gen.generate(dora_reqs))
    single = [timed(lambda r=r: gen.generate([r]))[0] for r in reqs[:shape.single]]
    per_single = statistics.mean(single)
    return bench.emit(
        "generation_production", requests=len(reqs), adapter="lora all-7 r16",
        budget=f"{shape.budget_tokens} + {shape.budget_factor:g} x program tokens",
        new_tokens=tokens_of(active), active_seconds=round(active_s, 3),
        adapter_names_seconds=round(names_s, 3), adapter_names_tokens=tokens_of(named),
        active_vs_adapter_names=round(names_s / active_s, 2),
        faster_path="active" if active_s <= names_s else "adapter_names",
        tokens_per_s_per_gpu=round(tokens_of(active) / active_s, 1),
        dora_active_seconds=round(dora_s, 3), dora_tokens=tokens_of(dora_out),
        single_request_seconds=[round(x, 3) for x in single],
        batched_vs_sequential=round(per_single / (active_s / len(reqs)), 2), **peaks())


def mixed_case(bench: Bench, shape: Shape, gen: Generator, problems: list,
               adapters: dict) -> dict:
    """32 rows over 4 LoRA adapters at a fixed budget: one mixed batch vs one per adapter."""
    reqs = make_requests(shape, problems, adapters["lora"], shape.requests, shape.mixed_tokens)
    mixed_s, mixed = timed(lambda: gen.generate(reqs))
    gen.gen = dataclasses.replace(gen.gen, group_by_adapter=True)
    try:
        grouped_s, _ = timed(lambda: gen.generate(reqs))
    finally:
        gen.gen = dataclasses.replace(gen.gen, group_by_adapter=False)
    return bench.emit("generation_mixed", requests=len(reqs), adapters=len(adapters["lora"]),
                      fixed_tokens=shape.mixed_tokens, new_tokens=tokens_of(mixed),
                      mixed_batch_seconds=round(mixed_s, 3),
                      per_adapter_batches_seconds=round(grouped_s, 3),
                      mixed_vs_grouped=round(grouped_s / mixed_s, 2), **peaks())


def save_base(loaded: tuple, folder: Path) -> dict:
    """Write the bare base model and tokenizer as a local HF folder (before peft wraps it)."""
    save_s, _ = timed(lambda: (loaded[0].save_pretrained(str(folder), safe_serialization=True),
                               loaded[1].save_pretrained(str(folder))))
    size = sum(f.stat().st_size for f in folder.glob("*.safetensors"))
    return {"base_safetensors_gib": gib(size), "save_seconds": round(save_s, 1)}


def reload_vs_resident(bench: Bench, saved: dict, folder: Path, cfg: cfgmod.Config,
                       request: GenerationRequest, resident_single_s: float) -> dict:
    """Seconds of one request from a Generator built from a safetensors copy, vs resident."""
    reload_cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, base=str(folder)))

    def serve():
        gen = Generator(reload_cfg)
        gen.generate([request])
        gen.close()
    reload_s, _ = timed(serve)
    free()
    return bench.emit("resident_vs_reload", **saved, reload_seconds=round(reload_s, 3),
                      resident_single_request_seconds=round(resident_single_s, 3),
                      ratio=round(reload_s / resident_single_s, 2))


def swaps(bench: Bench, gen: Generator, refs: list[AdapterRef], resident: int) -> dict:
    """ms per activate() over many adapters with `resident` kept; growth first vs last."""
    ms = [timed(lambda ref=ref: gen.activate(ref))[0] * 1000 for ref in refs]
    hot = refs[-1]
    set_ms = statistics.median(timed(lambda: gen.activate(hot))[0] * 1000 for _ in range(5))
    first, last = ms[:resident], ms[-resident:]
    return bench.emit("adapter_swap", adapters=len(refs), resident=len(gen.resident),
                      max_resident=resident, loads=gen.adapter_loads,
                      median_ms=round(statistics.median(ms), 2),
                      first_median_ms=round(statistics.median(first), 2),
                      last_median_ms=round(statistics.median(last), 2),
                      growth=round(statistics.median(last) / statistics.median(first), 2),
                      resident_activate_ms=round(set_ms, 3),
                      all_ms=[round(m, 1) for m in ms])


# --------------------------------------------------------------------------- main

# (summary key, measure, field) of the headline figures; train rows by variant.
SUMMARY = (
    ("active_vs_adapter_names", "generation_production", "active_vs_adapter_names"),
    ("faster_path", "generation_production", "faster_path"),
    ("batched_vs_sequential", "generation_production", "batched_vs_sequential"),
    ("tokens_per_s_per_gpu", "generation_production", "tokens_per_s_per_gpu"),
    ("peak_reserved_gib_generation", "generation_production", "peak_reserved_gib"),
    ("mixed_vs_grouped", "generation_mixed", "mixed_vs_grouped"),
    ("resident_vs_reload", "resident_vs_reload", "ratio"),
    ("adapter_swap_ms", "adapter_swap", "median_ms"),
    ("adapter_swap_growth", "adapter_swap", "growth"),
)


def summary(bench: Bench, shape: Shape, device_name: str) -> dict:
    """The last line: headline figures (null where a phase failed or was skipped), each
    training figure with the checkpointing it was measured with, `failed`."""
    ok = [row for row in bench.rows if "error" not in row]
    by = {row["measure"]: row for row in ok}
    figures = {key: by.get(measure, {}).get(field) for key, measure, field in SUMMARY}
    production = cfgmod.load(CLUSTER_CONFIG).training.checkpointing(shape.device)
    train = {}
    for row in (r for r in ok if r["measure"] == "train"):
        ckpt = row["gradient_checkpointing"]
        label = row["variant"] + ("" if ckpt == production else
                                  "_checkpointed" if ckpt else "_full")
        train[label] = {k: row[k] for k in ("seconds_per_step", "projected_seconds_per_adapter",
                                            "gradient_checkpointing", "peak_reserved_gib")}
    return {"base": shape.base, "device": device_name, "dtype": shape.dtype, **figures,
            "train": train, "failed": bench.failed}


def measure(bench: Bench, shape: Shape, cfg: cfgmod.Config, loaded: tuple,
            skip: set, inject: set) -> None:
    """All phases, in the order that keeps the base bare where it must be."""
    if "train" not in skip:
        bench.phase("train", lambda: training(bench, shape, loaded, inject))
    problems = quixbugs_programs()
    with tempfile.TemporaryDirectory(prefix="coral-bench-gpu-") as tmp:
        root = Path(tmp)
        adapters = make_adapters(shape, loaded, root)
        saved = None if "reload" in skip else bench.phase(
            "save_base", lambda: save_base(loaded, root / "base"))
        gen = Generator(cfg, loaded=loaded)          # wraps the base with peft from here on
        peaks(reset=True)
        prod = bench.phase("generation_production", lambda: production_case(
            bench, shape, gen, problems, adapters))
        bench.phase("generation_mixed", lambda: mixed_case(bench, shape, gen, problems,
                                                           adapters))
        if prod and saved:
            request = make_requests(shape, problems, [adapters["lora"][0]], 1)[0]
            single = statistics.mean(prod["single_request_seconds"])
            bench.phase("resident_vs_reload", lambda: reload_vs_resident(
                bench, saved, root / "base", cfg, request, single))
        if "swap" not in skip:
            bench.phase("adapter_swap", lambda: swaps(
                bench, gen, copies(adapters["lora"], root, shape.swaps), shape.resident))
        gen.close()


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="random:tiny, CPU, small (CI)")
    parser.add_argument("--base", help="model.base (default random:codellama-7b)")
    parser.add_argument("--device", help="cuda | cpu (default cuda; cpu with --quick)")
    parser.add_argument("--out", type=Path, help="also write the JSON lines here")
    parser.add_argument("--cache-dir", help="model.cache_dir (where the tokenizer folder is)")
    parser.add_argument("--skip", default="", help="phases to skip: train,reload,swap")
    parser.add_argument("--inject-oom", default="", metavar="VARIANTS",
                        help="make these training steps raise out-of-memory (lora_qv, "
                             "lora_all, dora_all, lora_qv_full): how the tests check that "
                             "an OOM counts as a failure")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    shape = QUICK if args.quick else full_shape()
    device = args.device or shape.device
    shape = dataclasses.replace(shape, base=args.base or shape.base, device=device,
                                dtype="float32" if device == "cpu" else shape.dtype)
    if device == "cuda" and not torch.cuda.is_available():
        print("error: no CUDA device (use --quick or --device cpu)", file=sys.stderr)
        return 2
    bench = Bench(args.out)
    cfg = run_config(shape, args.cache_dir)
    device_name = (torch.cuda.get_device_name() if device == "cuda"
                   else f"cpu ({os.cpu_count()} cores)")
    load_s, loaded = timed(lambda: load_base(cfg.model))
    bench.emit("setup", base=shape.base, spec=loaded[2].name, device=device_name,
               dtype=shape.dtype, parameters=sum(p.numel() for p in loaded[0].parameters()),
               create_seconds=round(load_s, 2), torch=torch.__version__,
               random_weights=shape.base.startswith("random:"), **peaks())
    measure(bench, shape, cfg, loaded, set(filter(None, args.skip.split(","))),
            set(filter(None, args.inject_oom.split(","))))
    bench.emit("summary", **summary(bench, shape, device_name))
    return 1 if bench.failed else 0


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
