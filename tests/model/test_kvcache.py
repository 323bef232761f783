"""The in-place KV cache (coral.model.kvcache) gives the tokens of transformers' own cache."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from coral.config import ModelConfig
from coral.model import decode as decoding
from coral.model import kvcache, prefix
from coral.model.generation import Generator
from coral.model.loading import load_base
from tests.model.test_generation import BITCOUNT, GCD, KNOBS, make_adapter, req, tiny_cfg


@pytest.fixture(scope="module")
def tiny():
    """The tiny random LLaMA and its tokenizer."""
    model, tokenizer, _ = load_base(ModelConfig(base="tiny"))
    return model.eval(), tokenizer


def _batch(tokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    """Three left-padded prompts of different lengths."""
    rows = [tokenizer(t, add_special_tokens=False)["input_ids"]
            for t in ("def f(x):", GCD, BITCOUNT + GCD)]
    width = max(len(r) for r in rows)
    ids = torch.tensor([[0] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    return ids, mask


def _greedy(model, ids, mask, cache, steps: int) -> torch.Tensor:
    with torch.inference_mode():
        return model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=steps,
                              min_new_tokens=steps, do_sample=False, pad_token_id=0,
                              **{prefix.cache_kwarg(): cache})


def test_growing_layers_give_the_tokens_of_dynamic_cache_and_grow_in_chunks(tiny, monkeypatch):
    """Greedy decoding past several chunks: the same tokens as transformers' DynamicCache;
    the layers hand out views of one buffer, reallocated once per chunk, not per step."""
    from transformers import DynamicCache

    model, tokenizer = tiny
    monkeypatch.setattr(kvcache, "CHUNK", 5)
    ids, mask = _batch(tokenizer)
    want = _greedy(model, ids, mask, DynamicCache(config=model.config), 23)
    cache = kvcache.new_cache(model.config)
    buffers = set()
    real = kvcache._Buffers._room

    def counting(filled, capacity):
        buffers.add(capacity)
        return real(filled, capacity)

    monkeypatch.setattr(kvcache._Buffers, "_room", staticmethod(counting))
    assert torch.equal(_greedy(model, ids, mask, cache, 23), want)
    layer = cache.layers[0]
    assert type(layer).__name__ == "GrowingLayer"
    assert layer.keys.data_ptr() == layer._bufs.keys.data_ptr()       # a view, not a copy
    assert layer.get_seq_length() == want.shape[1] - 1                # last token not fed back
    # the prefill's buffer, then one more per chunk of the 22 steps (not one per step)
    assert 2 < len(buffers) <= 1 + 22 // kvcache.CHUNK
    assert max(buffers) - layer.get_seq_length() <= kvcache.CHUNK


def test_rows_leaving_a_growing_cache_keep_their_tokens(tiny):
    """batch_select_indices on a growing cache: the kept rows decode as they would have."""
    model, tokenizer = tiny
    ids, mask = _batch(tokenizer)
    want = _greedy(model, ids, mask, kvcache.new_cache(model.config), 12)
    cache = kvcache.new_cache(model.config)
    first = _greedy(model, ids, mask, cache, 6)
    keep = torch.tensor([0, 2])
    cache.batch_select_indices(keep)
    ids, mask = first[keep], torch.cat([mask, mask.new_ones((3, 6))], 1)[keep]
    rest = _greedy(model, ids, mask, cache, 6)
    assert torch.equal(rest, want[keep])


def test_generator_texts_do_not_depend_on_the_cache_class(tmp_path, monkeypatch):
    """Mixed LoRA/base rows, prompt cache on, rows leaving after short segments: the texts
    with transformers' DynamicCache everywhere equal those with the growing one."""
    from transformers import DynamicCache

    refs = [make_adapter(tmp_path, 11), make_adapter(tmp_path, 12)]
    reqs = [req(i, [None, *refs][i % 3], dataclasses.replace(KNOBS, max_new_tokens=9 + 2 * i),
                problem="gcd" if i % 2 else "bitcount", source=GCD if i % 2 else BITCOUNT)
            for i in range(6)]
    monkeypatch.setattr(decoding, "SEGMENT", 4)
    monkeypatch.setattr(decoding, "DROP_SHARE", 0.01)
    monkeypatch.setattr(kvcache, "CHUNK", 3)
    growing = [r.text for r in Generator(tiny_cfg(batch_size=6)).generate(reqs)]
    monkeypatch.setattr(decoding, "new_cache", lambda config: DynamicCache(config=config))
    monkeypatch.setattr(prefix, "new_cache", lambda config: DynamicCache(config=config))
    assert [r.text for r in Generator(tiny_cfg(batch_size=6)).generate(reqs)] == growing
