"""Batched multi-adapter generation on one resident base model.

`Generator` loads the base model once and keeps it. Adapters are loaded by `AdapterRef` into
peft's multi-adapter model and kept in an LRU of at most `generation.max_resident_adapters`
(evicted with `delete_adapter`); the base model is never reloaded and adapters are never
stacked: each row runs with exactly one adapter, or none (peft's "__base__" name).

Batching: LoRA rows with different adapters (and base-model rows) share a batch, ordered by
adapter so each adapter is added on its own slice of rows (coral.model.spans; peft's
`adapter_names=` for what that does not cover). DoRA adapters are not mixed (peft raises
"Cannot pass adapter_names when DoRA is enabled"): DoRA rows are batched per adapter with it
active, its weight norms computed once per resident adapter (coral.model.dora). A batch of
one adapter runs with it active. With `generation.group_by_adapter` every batch holds one
adapter (or only base rows); scripts/bench_gpu.py measures both. Per-row knobs and seeds
(coral.model.sampling) make a row's output independent of the other rows of its batch.

`Generator` is the ``hf`` backend of coral.model.backend.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

from coral.config import Config
from coral.messages import AdapterRef, GenerationRequest, GenerationResult
from coral.model.decode import decode
from coral.model.dora import freeze_dora
from coral.model import spans
from coral.model.batching import plan_batches
from coral.model.loading import load_base
from coral.model.prefix import (Layers, PromptCache, batch_cache, cache_kwarg, cache_of,
                                prompt_layers)
from coral.model.prompts import build_prompt, encode_prompt, truncate_prompt
from coral.model.threads import FreeCores
from coral.model.sampling import (AnswerEnd, RowLayout, code_only, row_processors,
                                  token_budget)

log = logging.getLogger(__name__)

BASE = "__base__"  # peft's name for "no adapter" in adapter_names
_PROMPT_MEMO = 512  # programs whose prompt ids are kept (a run has a few dozen)


def adapter_name(key: str) -> str:
    """A peft-safe adapter name for a store key (module dict keys may not contain dots)."""
    return "a" + hashlib.sha256(key.encode()).hexdigest()[:20]


class Generator:
    """The resident base model plus an LRU of adapters; turns requests into texts."""

    def __init__(self, cfg: Config, loaded: Optional[tuple] = None,
                 adapters: Any = None) -> None:
        """`loaded`: a (model, tokenizer, spec) from load_base to serve instead of loading."""
        self.cfg = cfg
        # An AdapterSource (coral.adapters.local): on Ray, the actor's own fetched copies;
        # None: the adapter's uri or the configured store, seen from this process.
        self.adapters = adapters
        self.gen = cfg.generation
        self.model, self.tokenizer, self.spec = loaded or load_base(cfg.model)
        self.base_loads = 1
        self.adapter_loads = 0
        self.device = next(self.model.parameters()).device
        self.dtype = next(self.model.parameters()).dtype
        self._peft: Any = None                       # PeftModel once the first adapter loads
        self._resident: "OrderedDict[str, str]" = OrderedDict()  # key -> peft adapter name
        self._store: Any = None
        self._prompts: dict[tuple[str, str], tuple[list[int], int]] = {}
        self._cores = FreeCores() if self.gen.threads == 0 else None
        self.prompt_cache = (PromptCache(self.gen.prompt_cache_mib << 20)
                             if self.gen.prompt_cache_mib else None)
        self.eos_ids = self._eos_ids()

    def stats(self) -> dict:
        """Load counters, resident adapters, device and dtype (GenerationPool.stats)."""
        return {"backend": "hf", "base_loads": self.base_loads,
                "adapter_loads": self.adapter_loads, "resident": list(self.resident),
                "prompt_cache": None if self.prompt_cache is None else {
                    "entries": len(self.prompt_cache), "mib": self.prompt_cache.bytes >> 20,
                    "hits": self.prompt_cache.hits, "misses": self.prompt_cache.misses},
                "device": str(self.device), "dtype": str(self.dtype)}

    def close(self) -> None:
        """Drop the model and adapters and return cached device memory to the driver."""
        import gc

        self._peft = self.model = None
        self._resident.clear()
        gc.collect()  # peft's wrappers hold reference cycles to the base model's layers
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    # ----------------------------------------------------------------- adapters

    @property
    def resident(self) -> tuple[str, ...]:
        """Keys of the adapters loaded now, least recently used first."""
        return tuple(self._resident)

    def _eos_ids(self) -> tuple[int, ...]:
        """Token ids that end an answer: the tokenizer's eos plus the model's configured ones."""
        ids = [self.tokenizer.eos_token_id]
        extra = getattr(self.model.generation_config, "eos_token_id", None)
        ids += list(extra) if isinstance(extra, (list, tuple)) else [extra]
        return tuple(dict.fromkeys(int(i) for i in ids if i is not None))

    def adapter_path(self, ref: AdapterRef) -> Path:
        """Local folder of an adapter: its uri when that is a local folder, else the store's."""
        if self.adapters is not None:
            return Path(self.adapters.path(ref))
        uri = ref.uri[len("file://"):] if ref.uri.startswith("file://") else ref.uri
        if uri and Path(uri).is_dir():
            return Path(uri)
        if self._store is None:
            from coral.adapters.store import store_from_config  # the store is only needed for bare keys
            self._store = store_from_config(self.cfg)
        path = Path(self._store.local_path(ref.key))
        if not path.is_dir():
            raise FileNotFoundError(f"adapter {ref.key} not found at {ref.uri!r} nor {path}")
        return path

    def ensure_resident(self, refs: Sequence[AdapterRef]) -> None:
        """Make the given adapters resident (loading, then evicting the least recently used)."""
        for ref in refs:
            if ref.key in self._resident:
                self._resident.move_to_end(ref.key)
                continue
            if ref.status != "ready":
                raise ValueError(f"adapter {ref.key} is not ready (status {ref.status})")
            self._load(ref)
        wanted = {r.key for r in refs}
        while len(self._resident) > self.gen.max_resident_adapters:
            victim = next(k for k in self._resident if k not in wanted)
            name = self._resident.pop(victim)
            if name in self._peft.active_adapters:  # peft warns when the active one goes
                self._peft.set_adapter(next(iter(self._resident.values())))
            self._peft.delete_adapter(name)
            if self.prompt_cache is not None:
                self.prompt_cache.drop_adapter(victim)
            log.debug("evicted adapter %s", victim)

    def activate(self, ref: AdapterRef) -> None:
        """Make one adapter resident and active (what an adapter swap costs)."""
        self.ensure_resident([ref])
        self._peft.set_adapter(self._resident[ref.key])

    def _load(self, ref: AdapterRef) -> None:
        """Load one adapter into the peft model (wrapping the base model the first time)."""
        from peft import PeftConfig, PeftModel

        path, name = self.adapter_path(ref), adapter_name(ref.key)
        # Checked before loading: batching trusts ref.use_dora, and peft cannot drop the only
        # adapter of a model cleanly.
        use_dora = bool(getattr(PeftConfig.from_pretrained(str(path)), "use_dora", False))
        if use_dora != ref.use_dora:
            raise ValueError(f"adapter {ref.key}: ref says use_dora={ref.use_dora}, "
                             f"its config says {use_dora}")
        if ref.checksum:  # a ref from the store: refuse a partial or overwritten adapter
            from coral.adapters.store import checksum_dir

            if checksum_dir(path) != ref.checksum:
                raise ValueError(f"adapter {ref.key}: weights at {path} do not match the "
                                 "checksum of its ref")
        # A half-precision base (bf16 on GPU) keeps its adapters in its dtype: peft's default
        # fp32 upcast doubles them (16 resident r=64 7-module adapters: ~10 GiB, not ~5).
        dtype = {"autocast_adapter_dtype": self.dtype == torch.float32}
        if self._peft is None:
            self._peft = PeftModel.from_pretrained(self.model, str(path), adapter_name=name,
                                                   is_trainable=False, **dtype)
            self._peft.eval()
        else:
            self._peft.load_adapter(str(path), adapter_name=name, is_trainable=False, **dtype)
        if use_dora and self.gen.dora_cache:
            freeze_dora(self._peft, name)   # the weight norm once, not at every step
        self._resident[ref.key] = name
        self.adapter_loads += 1
        log.debug("loaded adapter %s from %s", ref.key, path)

    # ----------------------------------------------------------------- generation

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        """Generate one text per request (same order), batching as described above."""
        results: list[Optional[GenerationResult]] = [None] * len(requests)
        plans = plan_batches(requests, self.gen.batch_size, self.gen.max_resident_adapters,
                             self.gen.group_by_adapter, [self.prompt_length(r) for r in requests])
        for plan in plans:
            batch = [requests[i] for i in plan.rows]
            for i, res in zip(plan.rows, self._run_batch(batch, plan.active_key)):
                results[i] = res
        return [r for r in results if r is not None]

    def _prompt(self, req: GenerationRequest) -> tuple[list[int], int]:
        """(prompt ids cut to max_prompt_tokens, token count of the buggy code) of a request,
        tokenised once per program (every genome and sample asks for the same prompts)."""
        memo = (req.problem, req.buggy_source)
        if memo not in self._prompts:
            text = build_prompt(self.tokenizer, req.problem, req.buggy_source)
            ids = encode_prompt(self.tokenizer, text)   # with <s> where the model expects it
            if len(ids) > self.gen.max_prompt_tokens:
                log.warning("prompt of %s has %d tokens; cut to %d", req.problem, len(ids),
                            self.gen.max_prompt_tokens)
            if len(self._prompts) >= _PROMPT_MEMO:
                self._prompts.clear()
            self._prompts[memo] = (truncate_prompt(ids, self.gen.max_prompt_tokens),
                                   self._tokens(req.buggy_source))
        return self._prompts[memo]

    def prompt_length(self, req: GenerationRequest) -> int:
        """Prompt tokens of a request (the Coalescer sorts rows by it)."""
        return len(self._prompt(req)[0])

    def batch_group(self, req: GenerationRequest) -> Optional[str]:
        """Requests of one group can share a batch (the Coalescer asks): LoRA and base rows
        all mix; a DoRA adapter (or, grouping by adapter, any adapter) runs alone."""
        ref = req.adapter
        if ref is None:
            return BASE if self.gen.group_by_adapter else None
        return ref.key if ref.use_dora or self.gen.group_by_adapter else None

    def _encode(self, batch: Sequence[GenerationRequest]) -> tuple[torch.Tensor, torch.Tensor,
                                                                   RowLayout]:
        """Left-padded ids and mask of the batch's prompts (each cut to max_prompt_tokens)."""
        rows = [self._prompt(req)[0] for req in batch]
        width = max(len(r) for r in rows)
        pad_id = self.tokenizer.pad_token_id
        ids = torch.tensor([[pad_id] * (width - len(r)) + r for r in rows])
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
        layout = RowLayout(tuple(width - len(r) for r in rows), width)
        return ids.to(self.device), mask.to(self.device), layout

    def _adapter_context(self, batch: Sequence[GenerationRequest],
                         active_key: Optional[str]) -> tuple[Any, dict, Any]:
        """(model to call, extra generate kwargs, context manager) for one batch."""
        refs = list({r.adapter.key: r.adapter for r in batch if r.adapter is not None}.values())
        self.ensure_resident(refs)
        if self._peft is None:  # no adapter ever loaded: plain base model
            return self.model, {}, contextlib.nullcontext()
        if active_key is None and len(refs) == 1 and all(r.adapter is not None for r in batch):
            active_key = refs[0].key   # one adapter: run it active, no per-row split
        if active_key is not None:
            self._peft.set_adapter(self._resident[active_key])
            return self._peft, {}, contextlib.nullcontext()
        if not refs:
            return self._peft, {}, self._peft.disable_adapter()
        rows = [None if r.adapter is None else self._resident[r.adapter.key] for r in batch]
        if spans.supported(self._peft, rows):   # rows ordered by adapter: see _run_batch
            return self._peft, {}, spans.AdapterSpans(self._peft, rows)
        names = [BASE if name is None else name for name in rows]
        return self._peft, {"adapter_names": names}, contextlib.nullcontext()

    def _autocast(self) -> Any:
        """bf16/fp16 autocast on CUDA (adapter weights may be fp32 next to a bf16 base)."""
        if self.device.type == "cuda" and self.dtype in (torch.bfloat16, torch.float16):
            return torch.autocast("cuda", dtype=self.dtype)
        return contextlib.nullcontext()

    def _run_batch(self, batch: Sequence[GenerationRequest],
                   active_key: Optional[str]) -> list[GenerationResult]:
        """Generate one batch, its rows ordered by adapter (each adapter's rows one slice,
        coral.model.spans); results in the batch's order."""
        order = sorted(range(len(batch)), key=lambda i: (
            "" if batch[i].adapter is None else batch[i].adapter.key))
        done = self._run_ordered([batch[i] for i in order], active_key)
        results: list = [None] * len(batch)
        for pos, i in enumerate(order):
            results[i] = done[pos]
        return results

    def _run_ordered(self, batch: Sequence[GenerationRequest],
                     active_key: Optional[str]) -> list[GenerationResult]:
        """Generate one batch (rows leave it as their answers end, coral.model.decode), then
        cut each row at its own limit and answer end."""
        start = time.perf_counter()
        used: list[int] = []

        def set_threads() -> None:   # per thread under OpenMP: set in the decoding one
            used.append(self._cores.threads() if self._cores is not None else self.gen.threads)
            torch.set_num_threads(used[-1])

        set_threads()
        ids, mask, layout = self._encode(batch)
        prefilled = self._cached_prompts(batch, layout.prompt_width)
        model, extra, ctx = self._adapter_context(batch, active_key)
        limits = [token_budget(r.knobs, self._prompt(r)[1]) for r in batch]
        processors = row_processors([r.knobs for r in batch], [r.seed for r in batch], layout,
                                    self.eos_ids[0], self.gen.greedy, limits,
                                    stop=AnswerEnd(self.tokenizer))
        with torch.inference_mode(), self._autocast(), ctx:
            rows = decode(model, ids, mask, processors, limits, self.eos_ids,
                          self.tokenizer.pad_token_id, extra, prefilled.get(cache_kwarg()),
                          set_threads, keepers=[ctx] if hasattr(ctx, "keep") else [])
        threads = round(sum(used) / len(used), 2)
        ended_at = processors[-1].ended_at
        seconds = time.perf_counter() - start
        results = []
        for row, (req, limit) in enumerate(zip(batch, limits)):
            tokens = self._cut(rows[row].tolist(), limit, ended_at[row])
            text = self.tokenizer.decode(tokens, skip_special_tokens=True)
            results.append(GenerationResult(
                request_id=req.request_id, genome_id=req.genome_id, problem=req.problem,
                text=text, new_tokens=len(tokens), seconds=seconds / len(batch),
                meta={"batch_size": len(batch), "batch_seconds": seconds, "threads": threads,
                      "adapter": None if req.adapter is None else req.adapter.key}))
        return results

    def _cached_prompts(self, batch: Sequence[GenerationRequest], width: int) -> dict:
        """generate kwargs with the rows' prompts (but their last token) already in the KV
        cache (coral.model.prefix), or none when the prompt cache is off."""
        if self.prompt_cache is None or min(self.prompt_length(r) for r in batch) < 2:
            return {}
        keys = [(None if r.adapter is None else r.adapter.key, (r.problem, r.buggy_source))
                for r in batch]
        by_key = dict(zip(keys, batch))
        self.ensure_resident(list({r.adapter.key: r.adapter for r in batch
                                   if r.adapter is not None}.values()))
        rows = self.prompt_cache.rows(keys, lambda key: self._prefill(by_key[key]))
        return {cache_kwarg(): batch_cache(rows, width - 1, self.model.config)}

    def _prefill(self, req: GenerationRequest) -> Layers:
        """Keys and values of one prompt but its last token, under the request's adapter."""
        ids = torch.tensor([self._prompt(req)[0][:-1]], device=self.device)
        model, ctx = self.model, contextlib.nullcontext()
        if req.adapter is not None:   # resident: _cached_prompts loaded the batch's adapters
            self._peft.set_adapter(self._resident[req.adapter.key])
            model = self._peft
        elif self._peft is not None:
            model, ctx = self._peft, self._peft.disable_adapter()
        with torch.inference_mode(), self._autocast(), ctx:
            out = model(input_ids=ids, use_cache=True, logits_to_keep=1)
        return prompt_layers(cache_of(out))

    def _tokens(self, source: str) -> int:
        """Token count of a program's code (the unit of the token budget)."""
        return len(self.tokenizer(code_only(source), add_special_tokens=False)["input_ids"])

    def _cut(self, tokens: list[int], limit: int, end: Optional[int] = None) -> list[int]:
        """A row's own tokens: up to its limit, ending at (and including) the first eos; an
        answer found complete after `end` tokens ends there with eos (on CUDA the sampler
        notices a step late, and the token it let through is not part of the answer)."""
        tokens = tokens[:limit]
        if end is not None and end < len(tokens):
            tokens = tokens[:end] + [self.eos_ids[0]]
        for pos, tok in enumerate(tokens):
            if tok in self.eos_ids:
                return tokens[:pos + 1]
        return tokens
