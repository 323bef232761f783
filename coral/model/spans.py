"""Mixed-adapter batches as slices: each LoRA adapter computed on its own contiguous rows.

peft mixes adapters in one batch through `adapter_names`: in every adapted layer, at every
decoding step, it rebuilds each adapter's row-index list in Python, gathers those rows
(`x[indices]`, a copy; on CUDA the indices are copied to the device first) and scatters the
adapter's output back (`index_put`). On a 16-row SmolLM2 batch over 4 adapters and the base
model that is 2.2 of 32.8 CPU seconds in `_mixed_batch_forward` itself (cProfile), and a
mixed 32-row step cost 66 ms more than a one-adapter step.

`AdapterSpans` runs such a batch with peft's adapters switched off (every LoRA layer is its
base layer) and a forward hook on each LoRA layer that adds, for each adapter, the same
`lora_B(lora_A(dropout(x))) * scaling` peft computes, on that adapter's slice of the batch:
the Generator orders a mixed batch's rows by adapter, so each adapter's rows are one slice
and no gather or scatter is needed. Rows that leave the batch (coral.model.decode) keep the
order, so the slices stay contiguous (`keep`).

Only plain LoRA on `peft.tuners.lora.Linear` layers is computed this way; a batch touching
anything else (a LoRA variant such as DoRA, a quantized or embedding LoRA layer) is left to
peft's `adapter_names` (`supported`).
"""

from __future__ import annotations

import itertools
from typing import Any, Optional, Sequence

import torch


def row_spans(names: Sequence[Optional[str]]) -> list[tuple[str, int, int]]:
    """(adapter, start, stop) of each run of equal names; base rows (None) get none."""
    spans, start = [], 0
    for name, run in itertools.groupby(names):
        stop = start + len(list(run))
        if name is not None:
            spans.append((name, start, stop))
        start = stop
    return spans


def _lora_layers(model: Any) -> list[Any]:
    from peft.tuners.lora import LoraLayer

    return [m for m in model.modules() if isinstance(m, LoraLayer)]


def supported(model: Any, names: Sequence[Optional[str]]) -> bool:
    """Whether every layer holding one of these adapters is a plain LoRA Linear layer (so
    the slices compute exactly what peft would) and each adapter's rows are one run."""
    from peft.tuners.lora import Linear

    wanted = {n for n in names if n is not None}
    if len(row_spans(names)) != len(wanted):
        return False
    for layer in _lora_layers(model):
        held = wanted & set(layer.lora_A.keys())
        if held and (type(layer) is not Linear or held & set(layer.lora_variant.keys())):
            return False
        if wanted & set(getattr(layer, "lora_embedding_A", {}).keys()):
            return False
    return True


class AdapterSpans:
    """Context manager: peft's adapters off, each adapter added on its own slice."""

    def __init__(self, model: Any, names: Sequence[Optional[str]]) -> None:
        self.model = model
        self.names = list(names)
        self.spans = row_spans(self.names)
        self._hooks: list[Any] = []
        self._off: Any = None

    def keep(self, index: torch.Tensor) -> None:
        """Only these rows (in this order, ascending) go on decoding."""
        self.names = [self.names[i] for i in index.tolist()]
        self.spans = row_spans(self.names)

    def __enter__(self) -> "AdapterSpans":
        # Adapters off first: if that fails, no hook is left behind on the shared model.
        self._off = self.model.disable_adapter()
        self._off.__enter__()
        wanted = {n for n in self.names if n is not None}
        for layer in _lora_layers(self.model):
            if wanted & set(layer.lora_A.keys()):
                self._hooks.append(layer.register_forward_hook(self._add))
        return self

    def __exit__(self, *exc: Any) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks = []
        self._off.__exit__(*exc)

    def _add(self, layer: Any, args: tuple, output: torch.Tensor) -> torch.Tensor:
        """The LoRA delta of each adapter this layer holds, on its rows."""
        x = args[0]
        for name, start, stop in self.spans:
            if name not in layer.lora_A:
                continue
            lora_a, lora_b = layer.lora_A[name], layer.lora_B[name]
            rows = x[start:stop].to(lora_a.weight.dtype)
            delta = lora_b(lora_a(layer.lora_dropout[name](rows))) * layer.scaling[name]
            output[start:stop] += delta.to(output.dtype)
        return output
