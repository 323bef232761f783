"""`model.base: random:<shape>`: a randomly initialised model of a named architecture.

For dry runs and benchmarks on machines that cannot reach real weights: a random model of the
same shape costs the same FLOPs and memory as the real one, so its timings are the real
timings, while every answer it gives is noise (timings, not fixes). The process says so
loudly (a log warning) every time one is loaded.

Shapes (`SHAPES`): ``codellama-7b`` (LLaMA: hidden 4096, intermediate 11008, 32 layers,
32 heads, vocab 32016; what CodeLlama-7b-Python is) and ``tiny`` (the tests' tiny LLaMA).

Tokenizer: SmolLM2's (vocab 49152), the one CORAL embeds, read from an HF tokenizer folder
(coral.model.loading.tokenizer_dir) so that no GGUF reader is needed where the model runs.
Its ids go beyond CodeLlama's 32016, so the embedding and output layer are **sized to cover
the tokenizer**: vocab_size = max(shape's vocab, tokenizer's) = 49152 for codellama-7b. That
adds 2 x 17136 x 4096 = 140M parameters (2% of 6.7B; the output layer, 3% of a token's
FLOPs, is 1.5x CodeLlama's). The spec's name records the vocabulary actually used, so
adapter keys never mix shapes.

Weights are created directly on the target device in the target dtype (a `torch.device`
context and that dtype as the default while the modules are built and initialised), so a 7B
model never materialises in fp32 on the CPU. Initialisation is transformers' own (normal,
std 0.02) under a fixed seed in a forked RNG, so the caller's RNG state is untouched.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any, Optional

log = logging.getLogger(__name__)

PREFIX = "random:"
# Bump when a shape or the initialisation changes: it is part of adapter keys.
RANDOM_VERSION = "v1"
SEED = 0

SHAPES: dict[str, dict[str, Any]] = {
    "codellama-7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                         num_attention_heads=32, num_key_value_heads=32, vocab_size=32016,
                         max_position_embeddings=16384, rms_norm_eps=1e-5,
                         tie_word_embeddings=False),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, vocab_size=0,  # tokenizer's
                 max_position_embeddings=2048, tie_word_embeddings=True),
}


def shape_of(base: str) -> Optional[str]:
    """The shape named by a `random:<shape>` base, None for any other base; unknown -> error."""
    if not base.startswith(PREFIX):
        return None
    shape = base[len(PREFIX):]
    if shape not in SHAPES:
        raise ValueError(f"model.base: unknown random shape {shape!r}; known: "
                         f"{', '.join(PREFIX + s for s in sorted(SHAPES))}")
    return shape


def vocab_size(shape: str, tokenizer_size: int) -> int:
    """The vocabulary the random model gets: the shape's, widened to cover the tokenizer."""
    return max(SHAPES[shape]["vocab_size"], tokenizer_size)


def spec_name(shape: str, tokenizer_size: int) -> str:
    """Name that goes into adapter keys: shape, recipe version and the vocabulary used."""
    return f"{PREFIX}{shape}-{RANDOM_VERSION}-vocab{vocab_size(shape, tokenizer_size)}"


def llama_config(shape: str, tokenizer: Any) -> Any:
    """The LlamaConfig of a shape for this tokenizer (special token ids from the tokenizer)."""
    from transformers import LlamaConfig

    fields = dict(SHAPES[shape], vocab_size=vocab_size(shape, len(tokenizer)))
    return LlamaConfig(**fields, bos_token_id=tokenizer.bos_token_id,
                       eos_token_id=tokenizer.eos_token_id,
                       pad_token_id=tokenizer.pad_token_id)


@contextlib.contextmanager
def _default_dtype(dtype: Any):
    """Make `dtype` the default floating dtype for the block (modules are built in it)."""
    import torch

    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def build(shape: str, tokenizer: Any, device: str, dtype: Any) -> Any:
    """A random LLaMA of `shape` on `device` in `dtype`, in eval mode; warns that it is random."""
    import torch
    from transformers import LlamaForCausalLM

    config = llama_config(shape, tokenizer)
    target = torch.device(device)
    devices = [target.index or 0] if target.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), _default_dtype(dtype), target:
        torch.manual_seed(SEED)
        model = LlamaForCausalLM(config)
    model.eval()
    params = sum(p.numel() for p in model.parameters())
    own = SHAPES[shape]["vocab_size"]
    widened = (f" widened from {own} to cover the tokenizer"
               if own and own != config.vocab_size else "")
    log.warning("model.base %s%s: RANDOM WEIGHTS (%.1fM parameters, vocab %d%s, %s/%s). "
                "Timings are real; every answer is noise. Use it for benchmarks and dry "
                "runs only.", PREFIX, shape, params / 1e6, config.vocab_size, widened,
                device, str(dtype).replace("torch.", ""))
    return model
