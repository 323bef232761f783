"""Prompt KV reuse: each (adapter, prompt) is prefilled once, not once per answer.

Every genome asks for answers to the same few programs, n samples each, and the untuned
genomes (and every no-adapter gene) share one base model: in `make run` the 120 search answers
come from about 30 distinct (adapter, prompt) pairs. Prefilling a left-padded batch of 8 real
QuixBugs prompts (~230 tokens each) takes 7 s of the ~25 s the batch costs on 2 CPU cores, so
recomputing the same prompt's keys and values for every sample is a third of generation.

`PromptCache` keeps the keys and values of a prompt's tokens but its last one, per adapter key
(None: the base model), least recently used first out, within `generation.prompt_cache_mib`.
`batch_cache` lays the rows' entries out as the left-padded batch would have them (zeros
where the padding is; the attention mask hides those) in a transformers `DynamicCache`, and
`generate` then runs only the last prompt token and the answer. Positions come from the
attention mask, so a row's keys are the same whatever its padding: an entry computed on the
prompt alone is the entry any batch would use, and a row's answer does not depend on the
batch it shares (each prompt is computed one way, alone, every time).
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from typing import Any, Callable, Hashable, Optional, Sequence

import torch

from coral.model.kvcache import new_cache

Layers = tuple[tuple[torch.Tensor, torch.Tensor], ...]   # per layer (keys, values) [1,h,L,d]


def entry_bytes(layers: Layers) -> int:
    """Memory an entry holds."""
    return sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in layers)


class PromptCache:
    """LRU of prompt keys/values by (adapter key, prompt), bounded in bytes."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self.hits = self.misses = 0
        self._entries: "OrderedDict[tuple[Optional[str], Hashable], Layers]" = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def rows(self, keys: Sequence[tuple[Optional[str], Hashable]],
             prefill: Callable[[tuple[Optional[str], Hashable]], Layers]) -> list[Layers]:
        """Each row's entry, computing (with `prefill`) those not cached; every entry a batch
        needs is kept until the batch has them, even past the limit."""
        out = []
        for key in keys:
            layers = self._entries.get(key)
            if layers is None:
                self.misses += 1
                layers = prefill(key)
                self._entries[key] = layers
                self.bytes += entry_bytes(layers)
            else:
                self.hits += 1
            self._entries.move_to_end(key)
            out.append(layers)
        self._trim(set(keys))
        return out

    def clear(self) -> None:
        """Forget every entry (benchmarks start each side cold)."""
        self._entries.clear()
        self.bytes = 0

    def drop_adapter(self, adapter_key: Optional[str]) -> None:
        """Forget an adapter's entries (it left the generator's resident adapters)."""
        for key in [k for k in self._entries if k[0] == adapter_key]:
            self.bytes -= entry_bytes(self._entries.pop(key))

    def _trim(self, keep: set) -> None:
        """Evict least recently used entries (not those in `keep`) down to max_bytes."""
        for key in list(self._entries):
            if self.bytes <= self.max_bytes:
                return
            if key not in keep:
                self.bytes -= entry_bytes(self._entries.pop(key))


@functools.lru_cache(maxsize=None)
def cache_kwarg() -> str:
    """The generate/forward argument that takes a KV cache (transformers 5: `cache`, 4.x:
    `past_key_values`; pyproject allows both)."""
    import transformers

    return "cache" if int(transformers.__version__.split(".")[0]) >= 5 else "past_key_values"


def cache_of(output: Any) -> Any:
    """The KV cache of a forward or generate output (`cache`, or 4.x's `past_key_values`)."""
    found = getattr(output, "cache", None)
    return found if found is not None else getattr(output, "past_key_values", None)


def prompt_layers(cache: Any) -> Layers:
    """(keys, values) per layer of a one-row transformers cache, detached copies."""
    return tuple((layer.keys.clone(), layer.values.clone()) for layer in cache.layers)


def batch_cache(rows: Sequence[Layers], width: int, config: Any) -> Any:
    """A DynamicCache (growing in place, coral.model.kvcache) of the rows' entries left-padded
    (with zeros) to `width` positions."""
    cache = new_cache(config)
    for layer in range(len(rows[0])):
        keys = [_left_pad(row[layer][0], width) for row in rows]
        values = [_left_pad(row[layer][1], width) for row in rows]
        cache.update(torch.cat(keys), torch.cat(values), layer)
    return cache


def _left_pad(t: torch.Tensor, width: int) -> torch.Tensor:
    """[1, h, L, d] -> [1, h, width, d], zeros in front."""
    missing = width - t.shape[-2]
    if missing == 0:
        return t
    pad = t.new_zeros((*t.shape[:-2], missing, t.shape[-1]))
    return torch.cat([pad, t], dim=-2)
