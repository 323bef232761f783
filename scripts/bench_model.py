"""Benchmark of the model layer: resident vs reload, mixed batches, adapter swaps, training.

Prints one JSON object per measurement and, last, one JSON object with the summary keys
resident_vs_reload, mixed_batch_vs_sequential, adapter_swap_ms, train_seconds_per_adapter,
plain_hf_tokens_per_s, pipeline_tokens_per_s, pipeline_vs_plain, dora_vs_lora_step,
coalesced_vs_per_genome (and the load average while it ran: the machine may be shared).
Every ratio is measured side by side in this one run on the same requests; the generation
speed ones (scripts/bench_generation_speed.py says what each compares) on real QuixBugs
buggy programs with the real prompt ($CORAL_QUIXBUGS).

    python scripts/bench_model.py            # SmolLM2 (embedded), default TrainingConfig
    python scripts/bench_model.py --quick    # tiny random LLaMA, under a minute

Measurements:
- train_seconds_per_adapter: coral.model.training.Trainer.train of one adapter of 20 steps
  (3 with --quick); the others used below get 1 step (only their
  shape matters for generation timing).
- resident_vs_reload: seconds per request when every request loads the base model and its
  adapter afresh and generates alone (the original system), over seconds per request of the
  resident Generator serving the same requests in one mixed batch (this system). The
  unbatched ratio (resident, one request at a time) is reported too.
- mixed_batch_vs_sequential: 8 requests over 4 LoRA adapters + the base model, one mixed
  batch vs 8 single-request calls on the same resident Generator (adapters already loaded).
- adapter_swap_ms: load an adapter from the store and make it active, LRU of one slot.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from coral.config import (Config, GenerationConfig, ModelConfig, TrainingConfig,  # noqa: E402
                          load)
from coral.model.generation import Generator  # noqa: E402
from coral.model.threads import usable_cpus  # noqa: E402
from coral.search.genome import HeavyGenes  # noqa: E402
from coral.search.knobs import CheapKnobs  # noqa: E402
from coral.messages import GenerationRequest  # noqa: E402
from coral.adapters.store import DirectoryStore  # noqa: E402
from coral.model.training import Trainer  # noqa: E402
from coral.judge.quixbugs import load_problems  # noqa: E402
import bench_generation_speed as speed  # noqa: E402

RUN_CONFIG = str(Path(__file__).resolve().parents[1] / "configs" / "local.yaml")
BUGGY = {
    "gcd": "def gcd(a, b):\n    if b == 0:\n        return a\n    else:\n"
           "        return gcd(a % b, b)\n",
    "bitcount": "def bitcount(n):\n    count = 0\n    while n:\n        n ^= n - 1\n"
                "        count += 1\n    return count\n",
}


def emit(name: str, **fields) -> dict:
    """Print one measurement as a JSON line."""
    row = {"measure": name, **fields}
    print(json.dumps(row), flush=True)
    return row


def genes(i: int, use_dora: bool = False, steps: int = 20) -> HeavyGenes:
    """Distinct adapter shapes."""
    mods = (("q_proj", "v_proj"), ("q_proj", "k_proj", "v_proj", "o_proj"))[i % 2]
    return HeavyGenes(r=(4, 8)[i % 2], lora_alpha=16.0 + i, lora_dropout=0.05,
                      target_modules=mods, use_dora=use_dora, steps=steps)


def train_adapters(cfg: Config, store: DirectoryStore, n: int, steps: int
                   ) -> tuple[list, float]:
    """One adapter with `steps` steps (timed), n-1 more with one step."""
    trainer = Trainer(cfg.model, cfg.training)
    first = trainer.train_into(store, genes(0, steps=steps), trainer.key(genes(0, steps=steps)))
    seconds = store.meta(first.key)["seconds"]
    refs = [first] + [trainer.train_into(store, genes(i, steps=1), trainer.key(genes(i, steps=1)))
                      for i in range(1, n)]
    return refs, seconds


def requests(refs, knobs: CheapKnobs, n: int = 8) -> list[GenerationRequest]:
    """n requests cycling over the adapters and the base model, two problems."""
    ads = list(refs) + [None]
    names = sorted(BUGGY)
    return [GenerationRequest(f"b{i}", f"g{i}", names[i % 2], BUGGY[names[i % 2]],
                              ads[i % len(ads)], knobs, seed=i) for i in range(n)]


def timed(fn) -> tuple[float, object]:
    """(seconds, value) of one call."""
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def measure_batching(gen: Generator, reqs: list, adapters: int,
                     repeats: int) -> tuple[dict, float, float]:
    """One mixed-adapter batch against the same requests one by one (median of `repeats`);
    (the emitted line, batch seconds, sequential seconds). Each run starts with a cold prompt
    cache: else the side run second finds every prompt prefilled by the first."""
    def run_cold(fn):
        speed.cold(gen)
        return timed(fn)

    batch_runs = [run_cold(lambda: gen.generate(reqs)) for _ in range(repeats)]
    batch_s, batched = sorted(batch_runs, key=lambda run: run[0])[repeats // 2]
    seq_s = statistics.median(run_cold(lambda: [gen.generate([r]) for r in reqs])[0]
                              for _ in range(repeats))
    tokens = sum(r.new_tokens for r in batched)
    line = emit("mixed_batch", requests=len(reqs), adapters=adapters,
                new_tokens=tokens, batch_seconds=round(batch_s, 3),
                sequential_seconds=round(seq_s, 3), ratio=round(seq_s / batch_s, 2))
    return line, batch_s, seq_s


def measure_reload(cfg: Config, reqs: list, load_s: float, batch_s: float,
                   seq_s: float) -> dict:
    """A fresh Generator per request (each loads everything) against the resident one."""
    reload = reqs[:3]
    reload_s, _ = timed(lambda: [Generator(cfg).generate([r]) for r in reload])
    per_reload = reload_s / len(reload)
    per_batched, per_alone = batch_s / len(reqs), seq_s / len(reqs)
    return emit("resident_vs_reload", base_load_seconds=round(load_s, 3),
                reload_seconds_per_request=round(per_reload, 3),
                resident_batched_seconds_per_request=round(per_batched, 3),
                resident_alone_seconds_per_request=round(per_alone, 3),
                ratio=round(per_reload / per_batched, 2),
                ratio_unbatched=round(per_reload / per_alone, 2))


def measure_swaps(cfg: Config, refs: list) -> dict:
    """Activating adapters in turn with room for one: each activation is a load."""
    swapper = Generator(dataclasses.replace(
        cfg, generation=dataclasses.replace(cfg.generation, max_resident_adapters=1)))
    swaps = []
    for i in range(8):
        s, _ = timed(lambda: swapper.activate(refs[i % len(refs)]))
        swaps.append(s * 1000)
    return emit("adapter_swap", swaps=len(swaps), median_ms=round(statistics.median(swaps), 2),
                max_ms=round(max(swaps), 2), loads=swapper.adapter_loads)


def measure_speed(cfg: Config, gen: Generator, store: DirectoryStore, refs: list,
                  args: argparse.Namespace) -> dict:
    """The issue-20 generation speed figures on real QuixBugs prompts (see the module)."""
    names = sorted(p.name for p in load_problems())[::5][: args.problems]
    problems = [p for p in load_problems() if p.name in names]
    knobs = CheapKnobs(temperature=0.4, top_p=0.9, top_k=40, repetition_penalty=1.05,
                       max_new_tokens=args.answer_tokens, max_new_tokens_factor=0.0)
    # One decoding thread, so CPU seconds measure the work: see bench_generation_speed.Clock.
    gen.gen = dataclasses.replace(gen.gen, threads=1)
    torch.set_num_threads(1)
    trainer = Trainer(cfg.model, cfg.training)
    dora_genes = genes(0, use_dora=True, steps=1)
    dora = trainer.train_into(store, dora_genes, trainer.key(dora_genes))
    plain = emit("plain_vs_pipeline", **speed.measure_plain_vs_pipeline(
        gen, refs[0], problems, knobs))
    uncached = Generator(dataclasses.replace(
        cfg, generation=dataclasses.replace(gen.gen, dora_cache=False)))
    step = emit("dora_step", **speed.measure_dora_step(gen, uncached, refs[0], dora, problems,
                                                         knobs, steps=args.step_tokens))
    uncached.close()
    coalesced = emit("coalescing", **speed.measure_coalescing(
        gen, refs, problems, speed.run_knobs(RUN_CONFIG), args.coalesce_batch,
        repeats=1 if args.quick else args.coalesce_repeats))
    threads = emit("threads", **speed.measure_threads(gen, refs[0], problems, knobs,
                                                      usable_cpus()))
    return {"plain_hf_tokens_per_s": plain["plain_hf_tokens_per_s"],
            "pipeline_tokens_per_s": plain["pipeline_tokens_per_s"],
            "pipeline_vs_plain": plain["pipeline_vs_plain"],
            "dora_vs_lora_step": step["dora_vs_lora_step"],
            "dora_uncached_vs_lora_step": step["dora_uncached_vs_lora_step"],
            "coalesced_vs_per_genome": coalesced["coalesced_vs_per_genome"],
            "coalesced_same_texts": coalesced["same_texts"],
            "all_cores_vs_one": threads["all_cores_vs_one"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny model, under a minute")
    parser.add_argument("--base", default=None, help="model.base (default smollm2 / tiny)")
    parser.add_argument("--max-new-tokens", type=int, default=None)
    parser.add_argument("--problems", type=int, default=8,
                        help="QuixBugs programs (requests per genome) of the speed figures")
    parser.add_argument("--answer-tokens", type=int, default=None,
                        help="token budget of each answer in the speed figures")
    parser.add_argument("--coalesce-batch", type=int,
                        default=load(RUN_CONFIG).generation.batch_size,
                        help="batch size of both sides of coalesced_vs_per_genome "
                             "(default: configs/local.yaml's generation.batch_size)")
    parser.add_argument("--coalesce-repeats", type=int, default=1,
                        help="interleaved runs of each side of coalesced_vs_per_genome "
                             "(each run of a side is minutes at the run's token budgets)")
    parser.add_argument("--step-tokens", type=int, default=None,
                        help="decoding steps timed for dora_vs_lora_step")
    args = parser.parse_args()
    args.answer_tokens = args.answer_tokens or (8 if args.quick else 64)
    args.step_tokens = args.step_tokens or (8 if args.quick else 16)
    logging.basicConfig(level=logging.WARNING)
    base = args.base or ("tiny" if args.quick else "smollm2")
    new_tokens = args.max_new_tokens or (24 if args.quick else 48)
    # --quick trains 3 steps: even the tiny model spends seconds per step on its 49k-token head.
    steps = 3 if args.quick else 20
    cfg = dataclasses.replace(Config(), model=ModelConfig(base=base), training=TrainingConfig(),
                              generation=GenerationConfig(batch_size=32, max_resident_adapters=8,
                                                          threads=torch.get_num_threads()))
    knobs = CheapKnobs(temperature=0.7, top_p=0.95, top_k=50, repetition_penalty=1.05,
                       max_new_tokens=new_tokens)
    with tempfile.TemporaryDirectory(prefix="coral-bench-") as root:
        store = DirectoryStore(root)
        train_s, (refs, train_seconds) = timed(lambda: train_adapters(cfg, store, 4, steps))
        emit("train", base=base, train_seconds_per_adapter=round(train_seconds, 3),
             steps=steps, batch_size=cfg.training.batch_size,
             max_length=cfg.training.max_length, all_adapters_seconds=round(train_s, 2))
        reqs = requests(refs, knobs)
        load_s, gen = timed(lambda: Generator(cfg))
        gen.generate(reqs[:2])                                  # warm-up, adapters resident
        gen.ensure_resident(refs)
        # The tiny model's calls take tenths of a second: take the median of a few.
        mixed, batch_s, seq_s = measure_batching(gen, reqs, len(refs), 3 if args.quick else 1)
        resident = measure_reload(cfg, reqs, load_s, batch_s, seq_s)
        swap = measure_swaps(cfg, refs)
        fast = measure_speed(cfg, gen, store, refs, args)
    summary = {"base": base, "device": str(gen.device), "dtype": str(gen.dtype),
               "max_new_tokens": new_tokens,
               "resident_vs_reload": resident["ratio"],
               "resident_vs_reload_unbatched": resident["ratio_unbatched"],
               "mixed_batch_vs_sequential": mixed["ratio"],
               "adapter_swap_ms": swap["median_ms"],
               "train_seconds_per_adapter": round(train_seconds, 3), **fast,
               "load_average": [round(x, 2) for x in os.getloadavg()],
               "cpus": os.cpu_count(), "speed_threads": torch.get_num_threads(),
               "targets": {"resident_vs_reload": 20, "mixed_batch_vs_sequential": 3,
                           "pipeline_vs_plain": 0.8, "dora_vs_lora_step": 1.5,
                           "coalesced_vs_per_genome": 1.5}}
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
