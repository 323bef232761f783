"""The shared prompt format and training tokenisation, on the real SmolLM2 tokenizer."""

from __future__ import annotations

import pytest

from coral.config import ModelConfig
from coral.model.loading import load_tokenizer, resolve
from coral.model.prompts import build_prompt, encode_example, format_target

BUGGY = "def add(a, b):\n    return a - b\n"
FIXED = "def add(a, b):\n    return a + b\n"


@pytest.fixture(scope="module")
def tok():
    """The tiny model's tokenizer (SmolLM2's, with its ChatML template)."""
    return load_tokenizer(resolve(ModelConfig(base="tiny")))


class _Plain:
    """A stand-in tokenizer without a chat template: only attributes build_prompt reads."""

    chat_template = None
    eos_token = "</s>"


def test_prompt_uses_chat_template_and_ends_at_assistant_turn(tok):
    text = build_prompt(tok, "add", BUGGY)
    assert text.startswith("<|im_start|>system")
    assert text.endswith("<|im_start|>assistant\n")
    assert "`add`" in text and "return a - b" in text


def test_plain_prompt_without_template():
    text = build_prompt(_Plain(), "add", BUGGY)
    assert "<|im_start|>" not in text and "return a - b" in text
    assert text.endswith("### Fixed function\n")


def test_target_is_fenced_function_only():
    assert format_target(FIXED) == "```python\n" + FIXED.strip("\n") + "\n```"


def test_labels_cover_only_target_plus_eos(tok):
    enc = encode_example(tok, "add", BUGGY, FIXED, max_length=160)
    assert len(enc["input_ids"]) == len(enc["labels"]) == len(enc["attention_mask"]) == 160
    learned = [i for i, lab in zip(enc["input_ids"], enc["labels"]) if lab != -100]
    assert tok.decode(learned) == format_target(FIXED) + tok.eos_token
    n_real = sum(enc["attention_mask"])
    # padding is masked and never learned, even though pad id == eos id for this tokenizer
    assert all(lab == -100 for lab in enc["labels"][n_real:])
    assert enc["labels"][n_real - 1] == tok.eos_token_id
    # the prompt part equals the tokenised prompt, as generation sees it
    prompt_ids = tok(build_prompt(tok, "add", BUGGY), add_special_tokens=False)["input_ids"]
    assert enc["input_ids"][: len(prompt_ids)] == list(prompt_ids)


def test_truncation_keeps_target_and_assistant_turn(tok):
    long_buggy = "def add(a, b):\n" + "".join(f"    x{i} = {i}\n" for i in range(60)) + \
        "    return a - b\n"
    enc = encode_example(tok, "add", long_buggy, FIXED, max_length=96, pad=False)
    assert len(enc["input_ids"]) == 96
    learned = [i for i, lab in zip(enc["input_ids"], enc["labels"]) if lab != -100]
    assert tok.decode(learned) == format_target(FIXED) + tok.eos_token
    prompt = tok.decode([i for i, lab in zip(enc["input_ids"], enc["labels"]) if lab == -100])
    assert prompt.startswith("<|im_start|>system") and prompt.endswith("assistant\n")


def test_unpadded_has_no_padding(tok):
    enc = encode_example(tok, "add", BUGGY, FIXED, max_length=512, pad=False)
    assert all(enc["attention_mask"]) and len(enc["input_ids"]) < 512
