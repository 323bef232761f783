"""`model.base: random:<shape>`: shapes, vocabulary, device/dtype at creation, loud warning."""

from __future__ import annotations

import logging

import pytest
import torch

from coral import config as cfgmod
from coral.config import ModelConfig
from coral.model import random_base
from coral.model.loading import load_base, load_tokenizer, resolve


def test_codellama_shape_is_built_without_memory_on_the_meta_device():
    spec = resolve(ModelConfig(base="random:codellama-7b"))
    tok = load_tokenizer(spec)
    # meta: the real 7B layout, no bytes allocated (creation follows the target device).
    model = random_base.build("codellama-7b", tok, "meta", torch.bfloat16)
    cfg = model.config
    assert (cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers,
            cfg.num_attention_heads, cfg.num_key_value_heads) == (4096, 11008, 32, 32, 32)
    # SmolLM2's ids reach 49151: the embedding is widened to cover them, and the name says so.
    assert len(tok) == 49152 and cfg.vocab_size == 49152
    assert model.get_input_embeddings().weight.shape == (49152, 4096)
    assert spec.name == "random:codellama-7b-v1-vocab49152"
    params = sum(p.numel() for p in model.parameters())
    assert 6.8e9 < params < 6.9e9                       # 6.74B + 2 x 17136 x 4096
    assert {p.device.type for p in model.parameters()} == {"meta"}
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


def test_tiny_is_created_in_the_target_dtype_and_leaves_global_state_alone(caplog):
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    with caplog.at_level(logging.WARNING):
        model, tok, spec = load_base(ModelConfig(base="random:tiny", dtype="bfloat16"))
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert torch.get_default_dtype() == torch.float32
    assert torch.equal(torch.rand(1), expected_next)    # the caller's RNG stream is untouched
    assert "RANDOM WEIGHTS" in caplog.text and "random:tiny" in caplog.text
    assert spec.random_shape == "tiny" and not model.training
    ids = torch.tensor([[len(tok) - 1, 5, 7]])          # the tokenizer's last id is in range
    assert model(input_ids=ids).logits.shape == (1, 3, len(tok))


def test_same_weights_every_time():
    a, _, _ = load_base(ModelConfig(base="random:tiny"))
    b, _, _ = load_base(ModelConfig(base="random:tiny"))
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(),
                                                 b.state_dict().values()))


def test_unknown_shape_is_a_config_error():
    with pytest.raises(cfgmod.ConfigError, match="model.base.*random:codellama-7b"):
        cfgmod.from_dict({"model": {"base": "random:gpt5"}})
    with pytest.raises(ValueError, match="unknown random shape"):
        random_base.shape_of("random:gpt5")
    assert random_base.shape_of("tiny") is None
