"""DoRA at LoRA cost for inference: each DoRA layer's weight norm computed once per adapter.

peft's DoRA layer (peft.tuners.lora.dora.DoraLinearLayer) rebuilds W + s*BA and its
column norm in every forward, i.e. at every decoding step of every adapted layer: a matrix
of the base weight's size per layer and step (measured: one CodeLlama-wide layer on CPU,
batch 8, 4.19 s a step against 0.041 s for LoRA). For a frozen adapter that norm is a
constant, so `freeze_dora` computes `magnitude / ||W + s*BA||` once when the adapter is
loaded and gives the layer a forward that only scales:

    result_dora = (scale - 1) * base_result + scale * s * B(A(x))

which is LoRA's work plus two element-wise products. The scale (one float per output
feature) lives in the adapter's own layer object, so it goes when the adapter is deleted
from the peft model (the generator's LRU eviction).

peft 0.21 has its own switch (`peft.helpers.DoraCaching`, `dora.ENABLE_DORA_CACHING`), but
it caches B@A too, a matrix of the base weight's size per layer and adapter (about 4 GiB per
resident adapter at 7B width on q/v), and it is a process-wide flag. This keeps a vector.
Valid for inference only: the generator's peft model is never trained (eval mode, no
dropout, `is_trainable=False`).
"""

from __future__ import annotations

from functools import partial
from typing import Any, Optional

import torch
import torch.nn.functional as F


def _scaled_forward(scale: torch.Tensor, x: torch.Tensor, *, lora_A: Any, lora_B: Any,
                    scaling: float, base_layer: Any, base_result: Optional[torch.Tensor] = None,
                    adapter_name: Optional[str] = None, fan_in_fan_out: bool = False
                    ) -> torch.Tensor:
    """DoraLinearLayer.forward with the norm precomputed (same arguments, same result)."""
    from peft.utils.other import transpose

    if base_result is None:
        base_result = F.linear(x, transpose(base_layer.weight, fan_in_fan_out).to(x.dtype))
    elif base_layer.bias is not None:
        base_result = base_result - base_layer.bias
    s = scale.to(base_result.dtype)
    return (s - 1) * base_result + s * lora_B(lora_A(x)) * scaling


def freeze_dora(model: Any, adapter_name: str) -> int:
    """Precompute the DoRA scale of every linear DoRA layer of `adapter_name`; the count."""
    from peft.tuners.lora.dora import DoraLinearLayer
    from peft.utils.other import transpose

    frozen = 0
    for module in model.modules():
        mags = getattr(module, "lora_magnitude_vector", None)
        if mags is None or adapter_name not in mags:
            continue
        dora = mags[adapter_name]
        if type(dora) is not DoraLinearLayer:   # embedding / conv variants: left as they are
            continue
        lora_A, lora_B = module.lora_A[adapter_name], module.lora_B[adapter_name]
        with torch.no_grad():
            weight = transpose(module.get_base_layer().weight, dora.fan_in_fan_out).float()
            delta = lora_B.weight.float() @ lora_A.weight.float()
            norm = torch.linalg.norm(weight + module.scaling[adapter_name] * delta, dim=1)
            scale = (dora.weight.float() / norm).view(1, -1)
        dora.forward = partial(_scaled_forward, scale, fan_in_fan_out=dora.fan_in_fan_out)
        frozen += 1
    return frozen
