"""Train one LoRA/DoRA adapter on a resident base model and write it to the adapter store.

`Trainer` loads the base model, tokenizer and training set once; each `train` call wraps the
same base model with peft, trains the genes' `steps` AdamW steps at their `learning_rate`
(heavy genes: part of the adapter key), saves the adapter and then unloads it, so the base
model is clean again for the next call (tests check that its weights are bit-identical
afterwards). Loading a 135M model takes seconds and a 7B model
minutes, which is why the model stays resident and only adapters come and go.

Determinism: the adapter's initialisation, dropout and batch order come from a seed derived
from the adapter key and TrainingConfig.data_seed, inside a forked torch RNG state, so the same
key trains the same adapter and the caller's RNG state is untouched.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import shutil
import tempfile
import time
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np

from coral.model.bugdata import build_rows
from coral.config import Config, ModelConfig, TrainingConfig
from coral.search.genome import HeavyGenes
from coral.messages import AdapterRef
from coral.model.prompts import encode_example
from coral.adapters.store import AdapterStore

log = logging.getLogger(__name__)


def lora_config(genes: HeavyGenes) -> Any:
    """The peft LoraConfig of a set of heavy genes (peft's own field names)."""
    from peft import LoraConfig

    canon = genes.canonical()
    return LoraConfig(r=canon["r"], lora_alpha=canon["lora_alpha"],
                      lora_dropout=canon["lora_dropout"],
                      target_modules=list(canon["target_modules"]),
                      use_dora=canon["use_dora"], bias="none", task_type="CAUSAL_LM")


@lru_cache(maxsize=8)
def data_version(tcfg: TrainingConfig) -> str:
    """The training set's version for a config (builds the rows once per process)."""
    return build_rows(tcfg)[1]


def adapter_key(cfg: Config, genes: HeavyGenes, base_model: Optional[str] = None) -> str:
    """Adapter key of `genes` for this config's base model and training set."""
    if base_model is None:
        from coral.model.loading import resolve

        base_model = resolve(cfg.model).name
    return genes.key(base_model, data_version(cfg.training))


def train_seed(key: str, data_seed: int) -> int:
    """Seed of one adapter's training, from its key and the data seed (no salted hash)."""
    return int.from_bytes(hashlib.sha256(f"{key}:{data_seed}".encode()).digest()[:8], "little") >> 1


def collate(rows: list[dict], pad_id: int) -> dict:
    """Right-pad encoded rows to the longest one; padding masked and labelled -100."""
    import torch

    width = max(len(r["input_ids"]) for r in rows)

    def padded(name: str, fill: int) -> Any:
        return torch.tensor([r[name] + [fill] * (width - len(r[name])) for r in rows])
    return {"input_ids": padded("input_ids", pad_id), "attention_mask": padded("attention_mask", 0),
            "labels": padded("labels", -100)}


def fit(model: Any, batches: list[dict], probe: Optional[dict], device: Any, dtype: Any,
        learning_rate: float) -> tuple[list[float], float, float, int]:
    """AdamW over the batches of a peft model; (per-step losses, probe loss before, after,
    trainable parameters); without a probe both losses are nan. scripts/bench_gpu.py times
    exactly this loop."""
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    optim = torch.optim.AdamW(params, lr=learning_rate)
    # bf16 weights on GPU: autocast keeps the fp32 adapter and bf16 base consistent.
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)

    def loss_of(batch: dict) -> Any:
        with autocast:   # no KV cache: training never decodes, and the cache costs memory
            return model(**{k: v.to(device) for k, v in batch.items()}, use_cache=False).loss

    def probe_loss() -> float:
        if probe is None:
            return float("nan")
        model.eval()
        with torch.no_grad():
            return float(loss_of(probe))

    before = probe_loss()
    model.train()
    losses = []
    for batch in batches:
        loss = loss_of(batch)
        loss.backward()
        optim.step()
        optim.zero_grad(set_to_none=True)
        losses.append(round(float(loss.detach()), 5))
    after = probe_loss()
    model.eval()
    return losses, round(before, 5), round(after, 5), sum(p.numel() for p in params)


@contextlib.contextmanager
def gradient_checkpointing(model: Any, enabled: bool) -> Iterator[None]:
    """Recompute each decoder layer in the backward pass while the block runs (non-reentrant:
    the frozen base needs no input that requires grad), and leave the base as it was."""
    if not enabled:
        yield
        return
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):   # transformers 5 names
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    try:
        yield
    finally:
        disable = (getattr(model, "activation_checkpointing_disable", None)
                   or model.gradient_checkpointing_disable)
        disable()
        model.disable_input_require_grads()   # peft adds this hook when it wraps the model


def release_cached_memory(device: Any) -> None:
    """Hand the allocator's cached blocks back after an adapter: the next one may have other
    shapes, and the generation actor sharing a card (num_gpus < 1) needs them."""
    import gc

    import torch

    gc.collect()   # peft's wrappers hold reference cycles to the base model's layers
    if device.type == "cuda":
        torch.cuda.empty_cache()


class Trainer:
    """A resident base model + tokenizer + encoded training set; trains adapters one by one."""

    def __init__(self, model_cfg: ModelConfig, tcfg: TrainingConfig,
                 loaded: Optional[tuple] = None) -> None:
        from coral.model.loading import load_base

        self.model_cfg, self.tcfg = model_cfg, tcfg
        self.model, self.tokenizer, self.spec = loaded or load_base(model_cfg)
        # Plain dicts, not a datasets.Dataset: the GPU check runs where `datasets` is absent.
        self.dataset, self.data_version = build_rows(tcfg)
        self.examples = self._encode()
        if not self.examples:
            raise RuntimeError(f"no training example fits in max_length={tcfg.max_length}")

    @classmethod
    def from_config(cls, cfg: Config) -> "Trainer":
        """A trainer for a whole run configuration."""
        return cls(cfg.model, cfg.training)

    def _encode(self) -> list[dict]:
        """Tokenise every pair; drop those whose answer would be cut (learning to stop
        mid-function would teach the wrong format)."""
        eos = self.tokenizer.eos_token_id
        out = []
        for row in self.dataset:
            enc = encode_example(self.tokenizer, row["name"], row["buggy"], row["fixed"],
                                 self.tcfg.max_length, pad=False)
            if enc["labels"][-1] == eos:
                out.append(enc)
        log.info("training set %s: %d of %d pairs fit in %d tokens", self.data_version,
                 len(out), len(self.dataset), self.tcfg.max_length)
        return out

    def identity(self) -> tuple[str, str]:
        """(base model name, data version): what adapter keys are computed from."""
        return self.spec.name, self.data_version

    def key(self, genes: HeavyGenes) -> str:
        """The adapter key of `genes` for this trainer's base model and data."""
        return genes.key(self.spec.name, self.data_version)

    def _batches(self, seed: int, steps: int) -> list[list[dict]]:
        """`steps` batches drawn epoch by epoch in a seeded order."""
        rng = np.random.default_rng(seed)
        order: list[int] = []
        need = steps * self.tcfg.batch_size
        while len(order) < need:
            order.extend(int(i) for i in rng.permutation(len(self.examples)))
        bs = self.tcfg.batch_size
        return [[self.examples[i] for i in order[s * bs:(s + 1) * bs]]
                for s in range(steps)]

    def train(self, genes: HeavyGenes, key: str,
              out_dir: Optional[Path] = None) -> tuple[Path, dict]:
        """Train one adapter; save its peft files to `out_dir` or a temp dir; (dir, meta)."""
        if genes.no_adapter:
            raise ValueError("steps 0 means no adapter: there is nothing to train")
        if key != self.key(genes):
            # The caller computed the key for other data or another base model: storing the
            # adapter under it would label it wrongly.
            raise ValueError(f"adapter key {key[:12]} does not match genes on "
                             f"{self.spec.name} / {self.data_version}")
        seed = train_seed(key, self.tcfg.data_seed)
        device = next(self.model.parameters()).device
        dtype = next(self.model.parameters()).dtype
        out = Path(out_dir) if out_dir else Path(tempfile.mkdtemp(prefix="coral-adapter-"))
        checkpointing = self.tcfg.checkpointing(device.type)
        start = time.perf_counter()
        try:
            losses, before, after, trainable = self._train_and_save(genes, seed, out, device,
                                                                    dtype, checkpointing)
        finally:
            release_cached_memory(device)
        seconds = time.perf_counter() - start
        meta = {"genes": genes.canonical(), "base_model": self.spec.name,
                "data_version": self.data_version, "steps": genes.steps,
                "learning_rate": genes.learning_rate, "batch_size": self.tcfg.batch_size,
                "max_length": self.tcfg.max_length, "seed": seed, "loss": losses,
                "probe_loss_before": before, "probe_loss_after": after,
                "trainable_params": trainable, "seconds": round(seconds, 3),
                "device": str(device), "dtype": str(dtype).replace("torch.", ""),
                "gradient_checkpointing": checkpointing,
                "examples": len(self.examples)}
        log.info("trained %s in %.1fs: loss %.3f -> %.3f", key[:12], seconds, losses[0], losses[-1])
        return out, meta

    def _train_and_save(self, genes: HeavyGenes, seed: int, out: Path, device: Any,
                        dtype: Any, checkpointing: bool = False
                        ) -> tuple[list[float], float, float, int]:
        """Wrap the base model in a fresh adapter, fit it under `seed`, save it to `out`,
        and unwrap the base model again whatever happens."""
        import torch
        from peft import get_peft_model

        pad_id = self.tokenizer.pad_token_id
        batches = [collate(b, pad_id) for b in self._batches(seed, genes.steps)]
        probe = collate(self.examples[: self.tcfg.batch_size], pad_id)
        devices = [device.index or 0] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            with gradient_checkpointing(self.model, checkpointing):
                peft_model = get_peft_model(self.model, lora_config(genes))
                try:
                    fitted = self._fit(peft_model, batches, probe, device, dtype,
                                       genes.learning_rate)
                    peft_model.save_pretrained(str(out), safe_serialization=True)
                finally:
                    # Back to the bare base model whatever happened: the next call wraps it.
                    self.model = peft_model.unload()
                    self.model.eval()
        return fitted

    def _fit(self, model: Any, batches: list[dict], probe: dict, device: Any, dtype: Any,
             learning_rate: float) -> tuple[list[float], float, float, int]:
        """AdamW over the batches; per-step losses and the probe batch's loss before/after."""
        return fit(model, batches, probe, device, dtype, learning_rate)

    def train_into(self, store: AdapterStore, genes: HeavyGenes, key: str) -> AdapterRef:
        """Train one adapter and write it to `store` atomically; return its ref."""
        out, meta = self.train(genes, key)
        try:
            return store.write(key, out, meta)
        finally:
            shutil.rmtree(out, ignore_errors=True)
