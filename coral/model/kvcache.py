"""A KV cache that grows in chunks instead of copying itself at every decoding step.

transformers' `DynamicLayer.update` appends a step's keys and values with `torch.cat`, which
copies the layer's whole cache: for a batch of 16 SmolLM2 rows ~530 positions long that is
30 layers x 2 copies per step, 46 ms of a 274 ms step on one CPU thread (torch profiler,
`aten::cat` 17% of the step), and it grows with the answer. `GrowingLayer` keeps each
layer's keys and values in a buffer with room for `CHUNK` more positions, writes a step in
place and hands attention a view of the filled part; the buffer is copied once per `CHUNK`
steps. The values attention sees are the same numbers in the same order, so the texts are
those of `DynamicLayer` (tests/model/test_kvcache.py).

`new_cache(config)` is a `DynamicCache` whose full-attention layers are `GrowingLayer`s
(sliding-window layers, which drop old positions, keep transformers' own class).
"""

from __future__ import annotations

from typing import Any, Optional

import torch

CHUNK = 128   # positions of room added when a buffer is full (one copy per CHUNK steps)


def _layer_base() -> type:
    from transformers.cache_utils import DynamicLayer

    return DynamicLayer


class _Buffers:
    """Keys and values of one layer, [batch, heads, capacity, head_dim], `length` filled."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        self.length = keys.shape[-2]
        self.keys = self._room(keys, self.length + CHUNK)
        self.values = self._room(values, self.length + CHUNK)

    @staticmethod
    def _room(filled: torch.Tensor, capacity: int) -> torch.Tensor:
        """A new buffer of `capacity` positions holding `filled` at the front."""
        buf = filled.new_empty((*filled.shape[:-2], capacity, filled.shape[-1]))
        buf[..., : filled.shape[-2], :] = filled
        return buf

    def append(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Write positions after the filled ones (a new buffer only when full)."""
        end = self.length + keys.shape[-2]
        if end > self.keys.shape[-2]:
            self.keys = self._room(self.filled(self.keys), end + CHUNK)
            self.values = self._room(self.filled(self.values), end + CHUNK)
        self.keys[..., self.length:end, :] = keys
        self.values[..., self.length:end, :] = values
        self.length = end

    def filled(self, buf: torch.Tensor) -> torch.Tensor:
        """The filled positions of a buffer (a view)."""
        return buf[..., : self.length, :]

    def select(self, indices: torch.Tensor) -> None:
        """Keep these batch rows."""
        self.keys, self.values = self.keys[indices], self.values[indices]


def growing_layer_class() -> type:
    """`GrowingLayer`, defined on first use so this module imports without transformers."""
    global _GROWING
    if _GROWING is None:
        _GROWING = _define(_layer_base())
    return _GROWING


_GROWING: Optional[type] = None


def _define(base: type) -> type:
    class GrowingLayer(base):   # type: ignore[misc, valid-type]
        """A DynamicLayer whose `update` writes in place (see the module docstring)."""

        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self._bufs: Optional[_Buffers] = None

        def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any,
                   **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            if self._bufs is None:
                self._bufs = _Buffers(key_states, value_states)
            else:
                self._bufs.append(key_states, value_states)
            self._expose()
            return self.keys, self.values

        def _expose(self) -> None:
            """`keys`/`values` are the filled views (transformers and prefix.py read them)."""
            self.keys = self._bufs.filled(self._bufs.keys)
            self.values = self._bufs.filled(self._bufs.values)

        def batch_select_indices(self, indices: torch.Tensor) -> None:
            if self._bufs is not None and self._bufs.length > 0:
                self._bufs.select(indices)
                self._expose()

        def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
            self.batch_select_indices(beam_idx.to(self.device))

        def batch_repeat_interleave(self, repeats: int) -> None:
            if self._bufs is not None:
                self._bufs.keys = self._bufs.keys.repeat_interleave(repeats, dim=0)
                self._bufs.values = self._bufs.values.repeat_interleave(repeats, dim=0)
                self._expose()

        def crop(self, tokens_to_remove: int) -> None:
            if tokens_to_remove > 0:
                raise ValueError(f"crop takes a negative count, got {tokens_to_remove}")
            if tokens_to_remove and self._bufs is not None:
                self._bufs.length = max(0, self._bufs.length + tokens_to_remove)
                self._expose()

        def reset(self) -> None:
            self._bufs = None
            super().reset()

    return GrowingLayer


def new_cache(config: Any) -> Any:
    """An empty DynamicCache for `config` whose plain layers grow in place."""
    from transformers import DynamicCache

    cache = DynamicCache(config=config)
    base, growing = _layer_base(), growing_layer_class()
    cache.layers = [growing() if type(layer) is base else layer for layer in cache.layers]
    return cache
