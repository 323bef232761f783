"""Answer ends, problem-relative token budgets and a repetition penalty over generated tokens."""

from __future__ import annotations

import dataclasses

import torch

from coral.model.sampling import (AnswerEnd, RowLayout, RowRepetitionPenalty, RowSampler,
                                  answer_complete, code_only, token_budget)
from coral.search.knobs import CheapKnobs

KNOBS = CheapKnobs(temperature=0.7, top_p=0.9, top_k=40, repetition_penalty=1.2,
                   max_new_tokens=32, max_new_tokens_factor=1.5)


def test_answers_end_at_the_closing_fence_or_after_the_function():
    assert answer_complete("```python\ndef f(x):\n    return x\n```")
    assert not answer_complete("```python\ndef f(x):\n    return x\n")
    assert not answer_complete("Here is the fix:\n```python\ndef f(x):\n")
    assert answer_complete("def f(x):\n    return x\n\nThis fixes the off-by-one.")
    assert not answer_complete("def f(x):\n    return x\n\ndef g(y):\n    return y")
    assert not answer_complete("import math\n\ndef f(x):\n    return x\n")
    assert not answer_complete("Sure! The bug is")


def test_token_budget_is_relative_to_the_buggy_function():
    assert token_budget(KNOBS, 100) == 32 + 150
    assert token_budget(dataclasses.replace(KNOBS, max_new_tokens_factor=0.0), 100) == 32
    source = 'def f(x):\n    return x\n\n"""\nA long description of the problem.\n"""\n'
    assert code_only(source) == "def f(x):\n    return x\n"


def test_repetition_penalty_ignores_the_prompt():
    layout = RowLayout(pad_lengths=(0,), prompt_width=3)
    proc = RowRepetitionPenalty([2.0], layout)
    scores = torch.tensor([[4.0, 4.0, 4.0, 4.0, -4.0]])
    prompt_only = torch.tensor([[0, 1, 2]])
    assert torch.equal(proc(prompt_only, scores), scores)          # copying is not punished
    generated = torch.tensor([[0, 1, 2, 1, 4]])
    assert proc(generated, scores).tolist() == [[4.0, 2.0, 4.0, 4.0, -8.0]]


def test_sampler_ends_rows_whose_answer_is_complete():
    layout = RowLayout(pad_lengths=(0, 0), prompt_width=1)
    sampler = RowSampler([1, 2], [True, True], [50, 50], layout, eos_token_id=9,
                         stop=LastToken(5))
    scores = torch.zeros(2, 10)
    scores[:, 3] = 1.0
    out = sampler(torch.tensor([[0, 5], [0, 4]]), scores)
    assert out.argmax(dim=-1).tolist() == [9, 3]
    assert sampler.ended_at == [1, None]      # the answer of row 0 had 1 token


class LastToken:
    """A stop check: the answer is over when `token` was generated."""

    def __init__(self, token: int) -> None:
        self.token = token

    def for_rows(self, n: int):
        return lambda row, token: token == self.token


ANSWERS = [
    "```python\ndef f(x):\n    return x\n```\nDone.",
    "Here is the fix:\n```python\ndef gcd(a, b):\n    if b == 0:\n        return a\n"
    "    return gcd(b, a % b)\n```",
    "def f(x):\n    return x\n\nThis fixes the off-by-one.",
    "def f(x):\n    return x\n\ndef g(y):\n    return y\nprint(g(1))",
    "import math\n\ndef f(x):\n    return math.sqrt(x)\n\n# note\nx = 1",
    "Sure! The bug is in the loop:\n\n    while n:\n        n &= n - 1\nok",
]


def test_incremental_answer_end_agrees_with_answer_complete_at_every_token():
    from coral.model.loading import load_tokenizer, resolve
    from coral.config import ModelConfig

    tokenizer = load_tokenizer(resolve(ModelConfig(base="tiny")))
    check = AnswerEnd(tokenizer).for_rows(len(ANSWERS))
    for row, text in enumerate(ANSWERS):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        for n in range(1, len(ids) + 1):
            expected = answer_complete(tokenizer.decode(ids[:n], skip_special_tokens=True))
            assert check(row, ids[n - 1]) == expected, (text, n)
