"""The ONE prompt format, shared by adapter training and generation.

An adapter only helps if generation shows it the format it was trained on, so both sides
call `build_prompt` (docs/history.md tells what happened otherwise), and training
teaches exactly the answer shape `format_target` writes (a fenced python block with only the
fixed function, then the tokenizer's end-of-sequence token), which the extractor expects.
"""

from __future__ import annotations

from typing import Any, Optional

SYSTEM = "You are an expert Python programmer. You fix bugs in Python functions."
INSTRUCTION = (
    "The Python function `{name}` below contains a bug. Fix the bug and reply with only the "
    "corrected function in a single ```python code block, without explanations.")
FENCE = "```"


def _user_message(name: str, buggy_source: str) -> str:
    """The task text: instruction naming the function, then the buggy source fenced."""
    code = buggy_source.strip("\n")
    return f"{INSTRUCTION.format(name=name)}\n\n{FENCE}python\n{code}\n{FENCE}"


def has_chat_template(tokenizer: Any) -> bool:
    """Whether the tokenizer carries a chat template (instruct models do)."""
    return bool(getattr(tokenizer, "chat_template", None))


def build_prompt(tokenizer: Any, name: str, buggy_source: str) -> str:
    """Prompt text for repairing `name`: the chat template with a generation prompt, if any."""
    user = _user_message(name, buggy_source)
    if has_chat_template(tokenizer):
        messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    # Base (non-chat) models: a plain instruction format ending where the answer starts.
    return f"{SYSTEM}\n\n### Task\n{user}\n\n### Fixed function\n"


def format_target(fixed_source: str) -> str:
    """The answer the model is trained to emit: a ```python block with only the fixed function."""
    code = fixed_source.strip("\n")
    return f"{FENCE}python\n{code}\n{FENCE}"


def eos_text(tokenizer: Any) -> str:
    """Text appended after the target in training so the model learns to stop."""
    return tokenizer.eos_token or ""


def start_token(tokenizer: Any) -> Optional[int]:
    """The id this tokenizer puts in front of a text by itself (LLaMA/CodeLlama: `<s>`;
    SmolLM2: none), else None."""
    bos = tokenizer.bos_token_id
    if bos is None:
        return None
    probe = tokenizer("a", add_special_tokens=True)["input_ids"]
    return bos if probe and probe[0] == bos else None


def encode_prompt(tokenizer: Any, text: str) -> list[int]:
    """A prompt's ids, led by the tokenizer's start token exactly once: tokenised without
    special tokens (a chat template may already write the start token, and the end token
    must never be added) and the start token put in front where the tokenizer adds one, as
    the model saw in its own training. Training and generation both call this."""
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    bos = start_token(tokenizer)
    if bos is not None and (not ids or ids[0] != bos):
        ids = [bos] + ids
    return ids


def truncate_prompt(ids: list[int], budget: int) -> list[int]:
    """Cut a too-long prompt in the middle: the head holds the instruction, the tail the end
    of the code and the assistant turn that the answer must follow."""
    if len(ids) <= budget:
        return ids
    head = budget // 2
    return ids[:head] + ids[len(ids) - (budget - head):]


def encode_example(tokenizer: Any, name: str, buggy: str, fixed: str, max_length: int,
                   pad: bool = True) -> dict:
    """Token ids, attention mask and labels of one training pair; loss only on the fix.

    Prompt and target are tokenised separately, exactly as generation tokenises the prompt, so
    the boundary tokens are the ones the model sees at inference. When the pair is too long the
    prompt is cut first (in the middle), and the target only if it alone does not fit. With
    `pad` the row is right-padded to `max_length` (padding masked and labelled -100).
    """
    prompt_ids = encode_prompt(tokenizer, build_prompt(tokenizer, name, buggy))
    target_ids = list(tokenizer(format_target(fixed) + eos_text(tokenizer),
                                add_special_tokens=False)["input_ids"])
    # Keep at least a little prompt so the target is conditioned on something.
    min_prompt = min(len(prompt_ids), max(1, max_length // 4))
    target_ids = target_ids[: max_length - min_prompt]
    prompt_ids = truncate_prompt(prompt_ids, max_length - len(target_ids))
    input_ids = prompt_ids + target_ids
    labels = [-100] * len(prompt_ids) + target_ids
    attention = [1] * len(input_ids)
    if pad:
        fill = max_length - len(input_ids)
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        input_ids = input_ids + [pad_id] * fill
        labels = labels + [-100] * fill
        attention = attention + [0] * fill
    return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}
