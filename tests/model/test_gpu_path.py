"""The GPU path's model details, checked on CPU: CodeLlama's start token, adapters kept in a
half-precision base's dtype.

The LLaMA tokenizer here is built offline (a small BPE vocabulary with LLaMA's special tokens,
`<s>` added in front by its post-processor, `tokenizer_class: LlamaTokenizer`, as CodeLlama's
tokenizer files declare): no hub is reachable from the test machines.
"""

from __future__ import annotations

import dataclasses
import json
import string

import pytest
import torch

from coral.config import ModelConfig, from_dict
from coral.messages import GenerationRequest
from coral.model.prompts import build_prompt, encode_example, encode_prompt
from coral.search.knobs import CheapKnobs

BUGGY = "def gcd(a, b):\n    return gcd(a % b, b)\n"
FIXED = "def gcd(a, b):\n    return a if b == 0 else gcd(b, a % b)\n"


@pytest.fixture(scope="module")
def llama_tokenizer(tmp_path_factory):
    """A LlamaTokenizer that adds `<s>` (id 1) in front, built offline."""
    from tokenizers import Tokenizer, models, processors
    from transformers import AutoTokenizer

    folder = tmp_path_factory.mktemp("llama-tokenizer")
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for ch in sorted(set(string.printable)):
        vocab.setdefault(ch, len(vocab))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.add_special_tokens(["<unk>", "<s>", "</s>"])
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)])
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>",
        "unk_token": "<unk>", "add_bos_token": True, "add_eos_token": False}))
    loaded = AutoTokenizer.from_pretrained(str(folder))
    loaded.pad_token = loaded.eos_token
    loaded.padding_side = "left"
    assert loaded("ab")["input_ids"][0] == 1       # the fixture is what CodeLlama's does
    return loaded


def test_llama_prompts_start_with_bos_once(llama_tokenizer):
    """Training rows and prompts begin with <s>, exactly once; the answer never gets one."""
    tok = llama_tokenizer
    ids = encode_prompt(tok, build_prompt(tok, "gcd", BUGGY))
    assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1
    row = encode_example(tok, "gcd", BUGGY, FIXED, 512, pad=False)
    assert row["input_ids"][0] == tok.bos_token_id
    assert row["input_ids"].count(tok.bos_token_id) == 1
    assert row["labels"][-1] == tok.eos_token_id
    # a chat template that writes the start token itself does not get a second one
    tok.chat_template = "{{ bos_token }}{% for m in messages %}{{ m['content'] }}{% endfor %}"
    try:
        templated = encode_prompt(tok, build_prompt(tok, "gcd", BUGGY))
    finally:
        tok.chat_template = None
    assert templated[0] == tok.bos_token_id and templated.count(tok.bos_token_id) == 1


def test_smollm2_prompts_are_unchanged(tiny_loaded):
    """SmolLM2's tokenizer adds no start token, so its prompts (and adapters) stay as they were."""
    tok = tiny_loaded[1]
    text = build_prompt(tok, "gcd", BUGGY)
    assert encode_prompt(tok, text) == tok(text, add_special_tokens=False)["input_ids"]


@pytest.fixture(scope="module")
def tiny_loaded():
    from coral.model.loading import load_base

    return load_base(ModelConfig(base="tiny", device="cpu", dtype="float32"))


def _request(adapter=None) -> GenerationRequest:
    knobs = CheapKnobs(temperature=0.7, top_p=0.9, top_k=20, repetition_penalty=1.0,
                       max_new_tokens=4)
    return GenerationRequest("r0", "g0", "gcd", BUGGY, adapter, knobs, seed=0)


def test_generator_feeds_the_model_bos(tiny_loaded, llama_tokenizer):
    """The Generator's batch rows start (after left padding) with <s> for a LLaMA tokenizer."""
    from coral.model.generation import Generator

    cfg = from_dict({"model": {"base": "tiny", "device": "cpu", "dtype": "float32"}})
    model, _, spec = tiny_loaded
    gen = Generator(cfg, loaded=(model, llama_tokenizer, spec))
    ids, mask, layout = gen._encode([_request(), dataclasses.replace(_request(),
                                                                     problem="bitcount")])
    for row in range(ids.shape[0]):
        assert int(ids[row, layout.pad_lengths[row]]) == llama_tokenizer.bos_token_id


def test_adapters_stay_in_a_half_precision_base_dtype(tmp_path):
    """A bf16 base keeps its adapters bf16 (peft would upcast them to fp32: twice the memory);
    an fp32 base keeps fp32 adapters; both generate."""
    from peft import LoraConfig, get_peft_model

    from coral.adapters.store import checksum_dir
    from coral.messages import AdapterRef
    from coral.model.generation import Generator
    from coral.model.loading import load_base

    for dtype, expected in (("bfloat16", torch.bfloat16), ("float32", torch.float32)):
        cfg = from_dict({"model": {"base": "tiny", "device": "cpu", "dtype": dtype}})
        loaded = load_base(cfg.model)
        path = tmp_path / dtype
        peft_model = get_peft_model(loaded[0], LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                                          task_type="CAUSAL_LM"))
        peft_model.save_pretrained(str(path))
        base = peft_model.unload()
        gen = Generator(cfg, loaded=(base, loaded[1], loaded[2]))
        ref = AdapterRef(f"k-{dtype}", str(path), checksum_dir(path))
        out = gen.generate([_request(ref)])
        lora = [p for n, p in gen._peft.named_parameters() if "lora_A" in n]
        assert lora and {p.dtype for p in lora} == {expected}, dtype
        assert out[0].new_tokens >= 1
