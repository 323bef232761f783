"""GPU benchmark at CodeLlama-7B size: training, mixed-adapter generation, reloads, swaps.

No Ray (and no datasets or gguf) is imported: it runs on a bare GPU box with torch,
transformers, peft and safetensors. One JSON object per measurement on stdout (and --out),
the summary last. Every ratio is measured side by side in this one process.

    python scripts/bench_gpu.py            # random:codellama-7b, CUDA bf16 (the GPU check)
    python scripts/bench_gpu.py --quick    # random:tiny on CPU in under a minute (CI)

Measurements (a random model of the real shape: its timings are the real model's):
- train (lora, dora): seconds per AdamW step of coral.model.training.fit at the cluster
  shape (batch 8 x 768 tokens, every row full length: the worst case), adapter r=16 on all
  seven projections (the widest target_modules gene), mean of the timed steps after a
  warm-up step; projected seconds per adapter = that x configs/cluster-codellama.yaml's steps;
  peak GPU memory of the step. An out-of-memory step is reported, then retried with
  gradient checkpointing so the figure exists either way.
- generation: 32 requests over 8 LoRA adapters with per-row knobs, all adapters resident,
  each request `--new-tokens` tokens (a random model almost never emits eos): one
  mixed batch vs 8 per-adapter batches (generation.group_by_adapter) vs 32 single
  requests. mixed_batch_vs_sequential = single / mixed seconds; mixed_vs_grouped =
  per-adapter / mixed seconds (< 1: grouping is faster, switch the default);
  tokens_per_s_per_gpu = new tokens / seconds of the faster batched mode (one GPU).
- resident_vs_reload: per-request seconds when each request builds a Generator from a local
  safetensors copy of the base (load base + adapter, generate alone; what the seeds' design
  did) over the resident Generator's per-request seconds in the mixed batch.
- adapter_swap: `Generator.activate` (load from disk, checksum, make active) of 48 adapters
  in turn with 16 resident (LRU evicting): ms per swap, first 16 vs last 16, so growth with
  the number of adapters seen shows (peft's load_adapter alone is known to grow from 27 ms
  to ~70 ms by the 35th adapter); and set_adapter of an already resident one.
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

from benchkit import Bench, free, gib, peak, timed  # noqa: E402  (scripts/benchkit.py)

from coral import config as cfgmod  # noqa: E402
from coral.adapters.store import checksum_dir  # noqa: E402
from coral.messages import AdapterRef, GenerationRequest  # noqa: E402
from coral.model.generation import Generator  # noqa: E402
from coral.model.loading import load_base  # noqa: E402
from coral.model.training import fit, lora_config  # noqa: E402
from coral.search.genome import HeavyGenes  # noqa: E402
from coral.search.knobs import CheapKnobs  # noqa: E402

ALL_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
CLUSTER_CONFIG = ROOT / "configs" / "cluster-codellama.yaml"
PROGRAMS = {
    "gcd": "def gcd(a, b):\n    if b == 0:\n        return a\n    else:\n"
           "        return gcd(a % b, b)\n",
    "bitcount": "def bitcount(n):\n    count = 0\n    while n:\n        n ^= n - 1\n"
                "        count += 1\n    return count\n",
    "sieve": "def sieve(max):\n    primes = []\n    for n in range(2, max + 1):\n"
             "        if any(n % p > 0 for p in primes):\n            primes.append(n)\n"
             "    return primes\n",
}


@dataclasses.dataclass(frozen=True)
class Shape:
    """What one run measures: model, device, training and generation sizes."""

    base: str
    device: str
    dtype: str
    train_batch: int
    train_length: int
    train_steps: int          # timed steps (after one warm-up step)
    new_tokens: int
    requests: int = 32
    adapters: int = 8
    resident: int = 16
    swaps: int = 48
    reloads: int = 2


FULL = Shape("random:codellama-7b", "cuda", "bfloat16", 8, 768, 3, 64)
# --quick only keeps the script from rotting: every phase runs, at the smallest sizes.
QUICK = Shape("random:tiny", "cpu", "float32", 2, 32, 1, 4, requests=16, adapters=4,
              resident=4, swaps=10, reloads=1)


def run_config(shape: Shape, cache_dir: Optional[str]) -> cfgmod.Config:
    """The run config the bench's Generator uses (LRU of `resident`, batch of 32)."""
    return cfgmod.from_dict({
        "model": {"base": shape.base, "device": shape.device, "dtype": shape.dtype,
                  "cache_dir": cache_dir},
        "generation": {"batch_size": shape.requests, "max_resident_adapters": shape.resident,
                       "max_prompt_tokens": 1024}})


# --------------------------------------------------------------------------- training

def train_batch(shape: Shape, vocab: int) -> dict:
    """One full-length batch of random ids (every row `train_length` tokens, all labelled)."""
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (shape.train_batch, shape.train_length), generator=gen)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}


def time_training(bench: Bench, shape: Shape, loaded: tuple, use_dora: bool,
                  cluster_steps: int, checkpointing: bool = False) -> dict:
    """Seconds per step (median of the timed steps), projection, peak memory."""
    from peft import get_peft_model

    model, tok, _ = loaded
    device, dtype = next(model.parameters()).device, next(model.parameters()).dtype
    genes = HeavyGenes(r=16, lora_alpha=32, lora_dropout=0.05, target_modules=ALL_MODULES,
                       use_dora=use_dora)
    batch = train_batch(shape, len(tok))
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    peft_model = get_peft_model(model, lora_config(genes))
    try:
        peak(reset=True)
        warm_s, _ = timed(lambda: fit(peft_model, [batch], None, device, dtype, 2e-4))
        total, _ = timed(lambda: fit(peft_model, [batch] * shape.train_steps, None, device,
                                     dtype, 2e-4))
        per_step = total / shape.train_steps
    finally:
        peft_model.unload()
        if checkpointing:
            model.gradient_checkpointing_disable()
            model.disable_input_require_grads()
        free()
    return bench.emit("train", variant="dora" if use_dora else "lora", r=16,
                      target_modules=len(ALL_MODULES), batch_size=shape.train_batch,
                      max_length=shape.train_length, gradient_checkpointing=checkpointing,
                      seconds_per_step=round(per_step, 4), steps_timed=shape.train_steps,
                      warmup_step_seconds=round(warm_s, 3), cluster_steps=cluster_steps,
                      projected_seconds_per_adapter=round(per_step * cluster_steps, 1),
                      peak_gpu_mem_gib=peak())


def training(bench: Bench, shape: Shape, loaded: tuple) -> None:
    """LoRA and DoRA at the cluster shape; an OOM is reported, then retried checkpointed."""
    cluster_steps = cfgmod.load(CLUSTER_CONFIG).training.steps
    for dora in (False, True):
        name = "train_dora" if dora else "train_lora"
        error = None
        try:
            time_training(bench, shape, loaded, dora, cluster_steps)
        except torch.cuda.OutOfMemoryError as exc:
            error = f"out of memory: {str(exc)[:200]}"
        if error is None:
            continue
        # Retried outside the except block: its traceback would keep the activations alive.
        free()
        bench.emit(name, error=error, peak_gpu_mem_gib=peak())
        bench.phase(name + "_checkpointed", lambda: time_training(
            bench, shape, loaded, dora, cluster_steps, checkpointing=True))


# --------------------------------------------------------------------------- adapters

def make_adapters(shape: Shape, loaded: tuple, root: Path, n: int) -> list[AdapterRef]:
    """n distinct random LoRA adapters (r=16, q/k/v/o) saved as peft safetensors."""
    from peft import LoraConfig, get_peft_model

    model = loaded[0]
    refs = []
    for i in range(n):
        torch.manual_seed(1000 + i)
        cfg = LoraConfig(r=16, lora_alpha=32, target_modules=list(ALL_MODULES[:4]),
                         init_lora_weights=False, task_type="CAUSAL_LM")
        peft_model = get_peft_model(model, cfg)
        path = root / f"adapter{i:02d}"
        peft_model.save_pretrained(str(path), safe_serialization=True)
        peft_model.unload()
        refs.append(AdapterRef(f"bench{i:02d}", str(path), checksum_dir(path)))
    return refs


def copies(refs: list[AdapterRef], root: Path, n: int) -> list[AdapterRef]:
    """n adapters with distinct keys and folders, cycling over the weights of `refs`."""
    out = []
    for i in range(n):
        src = refs[i % len(refs)]
        path = root / f"copy{i:02d}"
        shutil.copytree(src.uri, path)
        out.append(AdapterRef(f"swap{i:02d}", str(path), src.checksum))
    return out


# --------------------------------------------------------------------------- generation

def make_requests(shape: Shape, refs: list[AdapterRef]) -> list[GenerationRequest]:
    """`requests` requests over the adapters, per-row knobs, all `new_tokens` long."""
    names = sorted(PROGRAMS)
    reqs = []
    for i in range(shape.requests):
        knobs = CheapKnobs(temperature=0.3 + 0.05 * (i % 8), top_p=0.85 + 0.01 * (i % 10),
                           top_k=20 + i, repetition_penalty=1.0 + 0.01 * (i % 5),
                           max_new_tokens=shape.new_tokens)
        name = names[i % len(names)]
        reqs.append(GenerationRequest(f"q{i}", f"g{i}", name, PROGRAMS[name],
                                      refs[i % len(refs)], knobs, seed=i))
    return reqs


def run_mode(gen: Generator, reqs: list, grouped: bool) -> tuple[float, list]:
    """Seconds and results of one generate call in the given batching mode."""
    gen.gen = dataclasses.replace(gen.gen, group_by_adapter=grouped)
    return timed(lambda: gen.generate(reqs))


def generation(bench: Bench, shape: Shape, gen: Generator, refs: list) -> dict:
    """Mixed batch vs per-adapter batches vs single requests, same requests and tokens."""
    reqs = make_requests(shape, refs)
    gen.ensure_resident(refs)
    run_mode(gen, reqs[:2], grouped=False)                        # warm-up
    mixed_s, mixed = run_mode(gen, reqs, grouped=False)
    grouped_s, _ = run_mode(gen, reqs, grouped=True)
    gen.gen = dataclasses.replace(gen.gen, group_by_adapter=False)
    single_s, _ = timed(lambda: [gen.generate([r]) for r in reqs])
    tokens = sum(r.new_tokens for r in mixed)
    best = min(mixed_s, grouped_s)
    return bench.emit(
        "generation", requests=len(reqs), adapters=len(refs), new_tokens=tokens,
        mixed_batch_seconds=round(mixed_s, 3), per_adapter_batches_seconds=round(grouped_s, 3),
        single_requests_seconds=round(single_s, 3),
        mixed_tokens_per_s=round(tokens / mixed_s, 1),
        per_adapter_tokens_per_s=round(tokens / grouped_s, 1),
        single_tokens_per_s=round(tokens / single_s, 1),
        mixed_batch_vs_sequential=round(single_s / mixed_s, 2),
        mixed_vs_grouped=round(grouped_s / mixed_s, 2),
        faster_batching="mixed" if mixed_s <= grouped_s else "per_adapter",
        tokens_per_s_per_gpu=round(tokens / best, 1), peak_gpu_mem_gib=peak())


def save_base(loaded: tuple, folder: Path) -> dict:
    """Write the bare base model and tokenizer as a local HF folder (before peft wraps it)."""
    save_s, _ = timed(lambda: (loaded[0].save_pretrained(str(folder), safe_serialization=True),
                               loaded[1].save_pretrained(str(folder))))
    size = sum(f.stat().st_size for f in folder.glob("*.safetensors"))
    return {"base_safetensors_gib": gib(size), "save_seconds": round(save_s, 1)}


def reload_vs_resident(bench: Bench, shape: Shape, saved: dict, folder: Path,
                       cfg: cfgmod.Config, refs: list, resident_per_request: float) -> dict:
    """Per-request seconds building a Generator from a safetensors copy, vs resident."""
    reload_cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, base=str(folder)))
    reqs = make_requests(shape, refs)[: shape.reloads]
    per = []
    for req in reqs:
        def serve():
            gen = Generator(reload_cfg)
            gen.generate([req])
            gen.close()
        per.append(timed(serve)[0])
        free()
    reload_s = statistics.mean(per)
    return bench.emit("resident_vs_reload", **saved,
                      reload_seconds_per_request=[round(s, 3) for s in per],
                      resident_seconds_per_request=round(resident_per_request, 4),
                      ratio=round(reload_s / resident_per_request, 1))


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

# (summary key, measure[_variant], field) of the headline figures.
SUMMARY = (
    ("train_lora_seconds_per_step", "train_lora", "seconds_per_step"),
    ("train_dora_seconds_per_step", "train_dora", "seconds_per_step"),
    ("projected_seconds_per_adapter_lora", "train_lora", "projected_seconds_per_adapter"),
    ("projected_seconds_per_adapter_dora", "train_dora", "projected_seconds_per_adapter"),
    ("peak_gpu_mem_gib_lora", "train_lora", "peak_gpu_mem_gib"),
    ("peak_gpu_mem_gib_dora", "train_dora", "peak_gpu_mem_gib"),
    ("peak_gpu_mem_gib_generation", "generation", "peak_gpu_mem_gib"),
    ("mixed_batch_vs_sequential", "generation", "mixed_batch_vs_sequential"),
    ("mixed_vs_grouped", "generation", "mixed_vs_grouped"),
    ("faster_batching", "generation", "faster_batching"),
    ("tokens_per_s_per_gpu", "generation", "tokens_per_s_per_gpu"),
    ("resident_vs_reload", "resident_vs_reload", "ratio"),
    ("adapter_swap_ms", "adapter_swap", "median_ms"),
    ("adapter_swap_growth", "adapter_swap", "growth"),
)


def summary(bench: Bench, shape: Shape, device_name: str) -> dict:
    """The last line: headline figures (null where a phase failed or was skipped), targets."""
    by = {row["measure"] + ("_" + row["variant"] if "variant" in row else ""): row
          for row in bench.rows if "error" not in row}
    figures = {key: by.get(measure, {}).get(field) for key, measure, field in SUMMARY}
    return {"base": shape.base, "device": device_name, "dtype": shape.dtype,
            "new_tokens": shape.new_tokens, **figures, "failed": bench.failed,
            "targets": {"mixed_batch_vs_sequential": 3, "resident_vs_reload": 20}}


def measure(bench: Bench, shape: Shape, cfg: cfgmod.Config, loaded: tuple,
            skip: set) -> None:
    """All phases, in the order that keeps the base bare where it must be."""
    if "train" not in skip:
        bench.phase("train", lambda: training(bench, shape, loaded))
    with tempfile.TemporaryDirectory(prefix="coral-bench-gpu-") as tmp:
        root = Path(tmp)
        refs = make_adapters(shape, loaded, root, shape.adapters)
        saved = None if "reload" in skip else bench.phase(
            "save_base", lambda: save_base(loaded, root / "base"))
        gen = Generator(cfg, loaded=loaded)          # wraps the base with peft from here on
        peak(reset=True)
        gen_row = bench.phase("generation", lambda: generation(bench, shape, gen, refs))
        if gen_row and saved:
            per_request = gen_row["mixed_batch_seconds"] / gen_row["requests"]
            bench.phase("resident_vs_reload", lambda: reload_vs_resident(
                bench, shape, saved, root / "base", cfg, refs, per_request))
        if "swap" not in skip:
            bench.phase("adapter_swap", lambda: swaps(
                bench, gen, copies(refs, root, shape.swaps), shape.resident))
        gen.close()


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="random:tiny, CPU, small (CI)")
    parser.add_argument("--base", help="model.base (default random:codellama-7b)")
    parser.add_argument("--device", help="cuda | cpu (default cuda; cpu with --quick)")
    parser.add_argument("--new-tokens", type=int, help="tokens per request")
    parser.add_argument("--out", type=Path, help="also write the JSON lines here")
    parser.add_argument("--cache-dir", help="model.cache_dir (where the tokenizer folder is)")
    parser.add_argument("--skip", default="", help="phases to skip: train,reload,swap")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    shape = QUICK if args.quick else FULL
    device = args.device or shape.device
    shape = dataclasses.replace(shape, base=args.base or shape.base, device=device,
                                dtype="float32" if device == "cpu" else shape.dtype,
                                new_tokens=args.new_tokens or shape.new_tokens)
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
               memory_gib=peak(), random_weights=shape.base.startswith("random:"))
    measure(bench, shape, cfg, loaded, set(filter(None, args.skip.split(","))))
    bench.emit("summary", **summary(bench, shape, device_name))
    return 1 if bench.failed else 0


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
