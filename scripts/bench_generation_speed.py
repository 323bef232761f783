"""Generation speed measurements of scripts/bench_model.py (issue 20), on real QuixBugs prompts.

- plain_vs_pipeline: plain transformers `generate` of the peft model with one adapter active
  (its own sampling warpers, one knob set for the batch) against CORAL's `Generator` on the
  same requests: same prompts (real buggy programs, the real prompt), batch, token budget and
  stopping (eos, or the answer's end: a stopping criterion fed each step's new token), same
  threads. tokens/s counts each row's tokens up to its end.
- dora_vs_lora_step: seconds per decoding step (a fixed number of steps, greedy) of a batch
  with a DoRA adapter active over the same batch with a LoRA adapter of the same shape; also
  with peft's own DoRA forward (no cached norm) for comparison.
- coalesced_vs_per_genome: 4 genomes x 8 requests (one adapter and knob set each), one call
  per genome (each decoded alone) against the four calls queued in a `Coalescer` (shared
  batches, rows of the same program together), at the same batch size; the texts must be
  the same. Both sides decode what a run decodes (`run_knobs`): the middle of
  configs/local.yaml's knob ranges, so each answer's token budget is relative to its program
  (32 + 1.3 x the buggy function's tokens) and answers end at their closing fence. With one
  fixed budget for every row (the first version of this measure: 64 tokens) an answer
  never outlives its batch, which is not what a run decodes, and the prompts' prefill (the
  same work on both sides) was 40% of the time.
- all_cores_vs_one: wall seconds of one 16-row batch on one thread over all the cores, the
  measurement behind `generation.threads: 0` (idle machine only).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Sequence

import torch

from coral.judge.quixbugs import Problem
from coral.messages import AdapterRef, GenerationRequest
from coral.model.coalesce import Coalescer
from coral.model.sampling import AnswerEnd, token_budget
from coral.messages import CheapKnobs

REPEATS = 2  # interleaved runs of each side; the faster is kept (the machine is shared)


class Clock:
    """Wall and CPU seconds of this process since start. Decoding runs on one torch thread
    here, so CPU seconds are what the work costs, also on a machine shared with other jobs
    (where wall seconds are mostly waiting for a core); ratios are taken of CPU seconds."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def read(self) -> tuple[float, float]:
        """(wall, cpu) seconds elapsed."""
        return time.perf_counter() - self.wall, time.process_time() - self.cpu


def run_knobs(config_path: str) -> CheapKnobs:
    """The middle of a config's knob ranges with its budget rule (coalesced_vs_per_genome)."""
    from coral.config import load

    ranges = load(config_path).knobs
    mid = {name: round((getattr(ranges, name).low + getattr(ranges, name).high) / 2, 6)
           for name in ("temperature", "top_p", "repetition_penalty", "max_new_tokens_factor")}
    return CheapKnobs(top_k=round((ranges.top_k.low + ranges.top_k.high) / 2),
                      max_new_tokens=int(ranges.max_new_tokens), **mid)


def genome_requests(genome: str, ref: AdapterRef, problems: Sequence[Problem],
                    knobs: CheapKnobs) -> list[GenerationRequest]:
    """One genome's requests: one per problem, seeds by problem (as the engine's samples)."""
    return [GenerationRequest(f"{genome}/{p.name}", genome, p.name, p.buggy_source, ref, knobs,
                              seed=1000 + i) for i, p in enumerate(problems)]


class _AnswerStop:
    """transformers StoppingCriteria (per row) from coral's incremental answer-end check."""

    def __init__(self, tokenizer: Any, rows: int, prompt_width: int) -> None:
        self.check = AnswerEnd(tokenizer).for_rows(rows)
        self.done = torch.zeros(rows, dtype=torch.bool)
        self.prompt_width = prompt_width

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        last = input_ids[:, -1].tolist()
        for row, token in enumerate(last):
            if not self.done[row] and self.check(row, token):
                self.done[row] = True
        return self.done.clone().to(input_ids.device)


def plain_generate(gen: Any, reqs: Sequence[GenerationRequest]) -> tuple[tuple, int]:
    """((wall, cpu) seconds, tokens) of plain transformers sampling for `reqs` (one adapter, one knob set)."""
    from transformers import GenerationConfig, StoppingCriteriaList

    gen.activate(reqs[0].adapter)
    ids, mask, layout = gen._encode(reqs)
    knobs = reqs[0].knobs
    limit = max(token_budget(r.knobs, gen._prompt(r)[1]) for r in reqs)
    cfg = GenerationConfig(do_sample=True, temperature=knobs.temperature, top_p=knobs.top_p,
                           top_k=knobs.top_k, repetition_penalty=knobs.repetition_penalty,
                           max_new_tokens=limit, eos_token_id=list(gen.eos_ids),
                           pad_token_id=gen.tokenizer.pad_token_id)
    stop = StoppingCriteriaList([_AnswerStop(gen.tokenizer, len(reqs), layout.prompt_width)])
    torch.manual_seed(0)
    clock = Clock()
    with torch.inference_mode():
        out = gen._peft.generate(input_ids=ids, attention_mask=mask, generation_config=cfg,
                                 stopping_criteria=stop)
    seconds = clock.read()
    tokens = 0
    for row in out[:, layout.prompt_width:].tolist():
        ends = [i for i, t in enumerate(row) if t in gen.eos_ids or t == cfg.pad_token_id]
        tokens += ends[0] + 1 if ends else len(row)
    return seconds, tokens


def cold(gen: Any) -> None:
    """Empty the generator's prompt cache (each timed side prefills its prompts itself)."""
    if gen.prompt_cache is not None:
        gen.prompt_cache.clear()


def pipeline_generate(gen: Any, reqs: Sequence[GenerationRequest]) -> tuple[tuple, int]:
    """((wall, cpu) seconds, tokens) of CORAL's generation path for `reqs`, its prompt cache
    cold (every prompt prefilled, as plain generate does)."""
    cold(gen)
    clock = Clock()
    results = gen.generate(list(reqs))
    return clock.read(), sum(r.new_tokens for r in results)


def measure_plain_vs_pipeline(gen: Any, ref: AdapterRef, problems: Sequence[Problem],
                              knobs: CheapKnobs) -> dict:
    """tokens/s of plain transformers and of CORAL on one genome's batch."""
    reqs = genome_requests("plain", ref, problems, knobs)
    runs: dict[str, list] = {"plain": [], "pipeline": []}
    for _ in range(REPEATS):
        runs["plain"].append(plain_generate(gen, reqs))
        runs["pipeline"].append(pipeline_generate(gen, reqs))
    rate = {k: max(tok / s[1] for s, tok in v) for k, v in runs.items()}
    wall = {k: max(tok / s[0] for s, tok in v) for k, v in runs.items()}
    return {"requests": len(reqs), "plain_hf_tokens_per_s": round(rate["plain"], 2),
            "pipeline_tokens_per_s": round(rate["pipeline"], 2),
            "pipeline_vs_plain": round(rate["pipeline"] / rate["plain"], 3),
            "wall_tokens_per_s": {k: round(v, 2) for k, v in wall.items()},
            "runs_wall_cpu_tokens": {k: [[round(s[0], 2), round(s[1], 2), tok] for s, tok in v]
                                     for k, v in runs.items()}}


def step_seconds(gen: Any, ref: AdapterRef, reqs: Sequence[GenerationRequest],
                 steps: int) -> float:
    """CPU seconds per decoding step of `reqs` with `ref` active, `steps` greedy steps."""
    gen.activate(ref)
    ids, mask, _ = gen._encode(reqs)
    clock = Clock()
    with torch.inference_mode():
        gen._peft.generate(input_ids=ids, attention_mask=mask, max_new_tokens=steps,
                           min_new_tokens=steps, do_sample=False,
                           pad_token_id=gen.tokenizer.pad_token_id)
    return clock.read()[1] / steps


def measure_dora_step(gen: Any, uncached: Any, lora: AdapterRef, dora: AdapterRef,
                      problems: Sequence[Problem], knobs: CheapKnobs, steps: int) -> dict:
    """DoRA over LoRA seconds per step, same batch; `uncached` runs peft's own DoRA forward."""
    reqs = genome_requests("step", lora, problems, knobs)
    timing: dict[str, list[float]] = {"lora": [], "dora": [], "dora_uncached": []}
    for _ in range(REPEATS):
        timing["lora"].append(step_seconds(gen, lora, reqs, steps))
        timing["dora"].append(step_seconds(gen, dora, reqs, steps))
        timing["dora_uncached"].append(step_seconds(uncached, dora, reqs, steps))
    best = {k: min(v) for k, v in timing.items()}
    return {"batch": len(reqs), "steps": steps,
            "seconds_per_step": {k: round(v, 4) for k, v in best.items()},
            "dora_vs_lora_step": round(best["dora"] / best["lora"], 3),
            "dora_uncached_vs_lora_step": round(best["dora_uncached"] / best["lora"], 3)}


def measure_coalescing(gen: Any, refs: Sequence[AdapterRef], problems: Sequence[Problem],
                       knobs: CheapKnobs, batch_size: int, repeats: int = REPEATS) -> dict:
    """4 genomes x len(problems) requests: one call per genome against coalesced calls, at
    the same batch size (the one configs/local.yaml decodes with), each side with a cold
    prompt cache, `repeats` interleaved runs of each (the cheaper is kept)."""
    calls = [genome_requests(f"g{i}", ref, problems,
                             dataclasses.replace(knobs, temperature=0.5 + 0.1 * i))
             for i, ref in enumerate(refs)]
    keep = gen.gen
    gen.gen = dataclasses.replace(keep, batch_size=batch_size)
    per_genome, coalesced = [], []
    for _ in range(repeats):
        cold(gen)
        clock = Clock()
        alone = [gen.generate(c) for c in calls]
        per_genome.append(clock.read())
        cold(gen)
        clock = Clock()
        coalescer = Coalescer(gen, batch_size)
        tickets = [coalescer.submit(c) for c in calls]
        shared = [coalescer.run_until(t) for t in tickets]
        coalesced.append(clock.read())
    gen.gen = keep
    texts = [[r.text for r in rs] for rs in alone] == [[r.text for r in rs] for rs in shared]
    tokens = sum(r.new_tokens for rs in shared for r in rs)
    return {"genomes": len(calls), "requests_per_genome": len(problems),
            "adapters": len(refs), "batch_size": batch_size, "new_tokens": tokens,
            "knobs": dataclasses.asdict(knobs),
            "per_genome_wall_cpu_seconds": [round(x, 2) for x in min(per_genome, key=_cpu)],
            "coalesced_wall_cpu_seconds": [round(x, 2) for x in min(coalesced, key=_cpu)],
            "same_texts": texts,
            "coalesced_vs_per_genome": round(min(per_genome, key=_cpu)[1]
                                             / min(coalesced, key=_cpu)[1], 3)}


def measure_threads(gen: Any, ref: AdapterRef, problems: Sequence[Problem],
                    knobs: CheapKnobs, cpus: int) -> dict:
    """Wall seconds of one batch (2 samples of each program) decoded on one thread against
    all `cpus` (what `generation.threads: 0` takes when nothing else runs); wall, not CPU
    seconds, so this figure needs an otherwise idle machine (the load is printed beside it)."""
    reqs = [dataclasses.replace(r, request_id=f"{r.request_id}/{s}", seed=r.seed + 100 * s)
            for s in range(2) for r in genome_requests("threads", ref, problems, knobs)]
    keep = gen.gen
    wall = {}
    for threads in (1, cpus):
        gen.gen = dataclasses.replace(keep, threads=threads, batch_size=len(reqs))
        wall[threads] = min(pipeline_generate(gen, reqs)[0][0] for _ in range(REPEATS))
    gen.gen = keep
    torch.set_num_threads(1)
    return {"rows": len(reqs), "cpus": cpus,
            "wall_seconds": {str(k): round(v, 2) for k, v in wall.items()},
            "all_cores_vs_one": round(wall[1] / wall[cpus], 3)}


def _cpu(run: tuple[float, float]) -> float:
    return run[1]
