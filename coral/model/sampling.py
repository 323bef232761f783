"""Per-row sampling for batched generation: each row of a batch has its own knobs and seed.

transformers' own warpers take one temperature / top_p / top_k for the whole batch, and its
sampler draws from the global RNG, so a row's sample would depend on which other requests
share its batch. These processors hold one value per row instead, and the last one
(`RowSampler`) draws the token itself from a per-row `torch.Generator` seeded with the
request's seed, returning logits that are -inf everywhere but the chosen token; generate()
then runs in greedy mode and just picks that token. A row's tokens thus depend only on its
own prompt, adapter, knobs and seed (the engine's kill/resume and Ray-vs-in-process
equivalence rely on that).

Order, as in transformers: repetition penalty, temperature, top-k, top-p, sample.
All arithmetic is in float32 whatever the model dtype (bf16 logits would make the sampled
token depend on rounding).

Two choices differ from transformers on purpose:
- The repetition penalty counts only the tokens the row has generated, not its prompt: a fix
  mostly copies the buggy code shown in the prompt, and penalising that copying pushed small
  models into prose (transformers' version counts the whole sequence).
- A row stops at the end of its answer (`answer_complete`: the code block's closing fence,
  or the first column-0 line after an unfenced function's body), so sampling several answers
  per problem costs what the answers need, not the whole token budget.
The token budget itself is relative to the problem (`token_budget`): a factor times the buggy
function's token count plus a margin, so no knob value makes a long problem unfixable.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from coral.search.knobs import CheapKnobs


@dataclass(frozen=True)
class RowLayout:
    """Where each row's real tokens start in the left-padded batch, and its prompt width."""

    pad_lengths: tuple[int, ...]
    prompt_width: int


class RowRepetitionPenalty(LogitsProcessor):
    """transformers' repetition penalty with one penalty per row, over generated tokens only."""

    def __init__(self, penalties: Sequence[float], layout: RowLayout) -> None:
        self.penalty = torch.tensor(list(penalties), dtype=torch.float32)[:, None]
        self.prompt_width = layout.prompt_width

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        """Divide positive (multiply negative) logits of tokens the row already generated."""
        scores = scores.float()
        generated = input_ids[:, self.prompt_width:]
        if bool((self.penalty == 1.0).all()) or generated.shape[1] == 0:
            return scores
        # The prompt (and its left padding) is not counted: see the module docstring.
        seen = torch.zeros_like(scores).scatter_add_(
            1, generated, torch.ones_like(generated, dtype=scores.dtype)) > 0
        penalty = self.penalty.to(scores.device)
        penalised = torch.where(scores < 0, scores * penalty, scores / penalty)
        return torch.where(seen, penalised, scores)


class RowTemperature(LogitsProcessor):
    """Divide each row's logits by its own temperature."""

    def __init__(self, temperatures: Sequence[float]) -> None:
        self.temperature = torch.tensor(list(temperatures), dtype=torch.float32)[:, None]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        """Scaled logits."""
        return scores.float() / self.temperature.to(scores.device)


class RowTopK(LogitsProcessor):
    """Keep each row's k highest logits (ties at the k-th value kept, as in transformers)."""

    def __init__(self, top_ks: Sequence[int]) -> None:
        self.top_k = torch.tensor([max(1, int(k)) for k in top_ks])[:, None]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        """Logits below each row's k-th largest set to -inf."""
        scores = scores.float()
        k = self.top_k.to(scores.device).clamp(max=scores.shape[1])
        # topk of the largest k in the batch, not a full sort: the vocabulary is ~50k wide.
        top = torch.topk(scores, int(k.max()), dim=-1).values
        kth = top.gather(1, k - 1)
        return scores.masked_fill(scores < kth, float("-inf"))


class RowTopP(LogitsProcessor):
    """Nucleus filtering with one top_p per row; the most likely token is always kept."""

    def __init__(self, top_ps: Sequence[float]) -> None:
        self.top_p = torch.tensor(list(top_ps), dtype=torch.float32)[:, None]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        """Logits outside each row's nucleus set to -inf."""
        scores = scores.float()
        if bool((self.top_p >= 1.0).all()):
            return scores
        # Only finite logits can be in a nucleus; after top-k that is a few dozen, so sorting
        # just those (topk) is exact and far cheaper than sorting the whole vocabulary.
        width = max(1, int(torch.isfinite(scores).sum(dim=-1).max()))
        top, order = torch.topk(scores, width, dim=-1, sorted=True)
        probs = top.softmax(dim=-1)
        before = probs.cumsum(dim=-1) - probs  # mass strictly before each token
        keep_sorted = before < self.top_p.to(scores.device)
        keep = torch.zeros_like(scores, dtype=torch.bool).scatter_(1, order, keep_sorted)
        return scores.masked_fill(~keep, float("-inf"))


class RowSampler(LogitsProcessor):
    """Draw each row's next token with its own generator; rows past their length, or whose
    answer is complete (`stop`), get eos.

    Returns logits that are 0 at the chosen token and -inf elsewhere, so generate() in greedy
    mode emits exactly the chosen token. One uniform is drawn per row per step whatever the
    row's state, so a row's random stream is a function of its seed and step only.
    """

    def __init__(self, seeds: Sequence[int], greedy: Sequence[bool], max_new: Sequence[int],
                 layout: RowLayout, eos_token_id: int,
                 stop: Optional[Callable[[Sequence[int]], bool]] = None) -> None:
        self.generators = [torch.Generator(device="cpu").manual_seed(int(s) & (2**63 - 1))
                           for s in seeds]
        self.greedy = torch.tensor([bool(g) for g in greedy])
        self.max_new = torch.tensor([int(m) for m in max_new])
        self.prompt_width = layout.prompt_width
        self.eos = int(eos_token_id)
        self.stop = stop

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        """One-hot (0 / -inf) logits of the chosen token per row."""
        scores = scores.float()
        device = scores.device
        # Uniforms come from CPU generators: the same stream on any device.
        u = torch.cat([torch.rand(1, generator=g) for g in self.generators]).to(device)
        probs = scores.softmax(dim=-1)
        # Inverse-CDF in token-id order: a tiny numeric change of the logits (another batch
        # shape) moves the CDF by a tiny amount, so the drawn token almost never changes.
        cdf = probs.cumsum(dim=-1)
        target = (u * cdf[:, -1]).unsqueeze(-1)
        sampled = torch.searchsorted(cdf, target).squeeze(-1).clamp_(max=scores.shape[1] - 1)
        chosen = torch.where(self.greedy.to(device), scores.argmax(dim=-1), sampled)
        done = input_ids.shape[1] - self.prompt_width >= self.max_new.to(device)
        done = done | self._answered(input_ids).to(device)
        chosen = torch.where(done, torch.full_like(chosen, self.eos), chosen)
        out = torch.full_like(scores, float("-inf"))
        return out.scatter_(1, chosen[:, None], 0.0)

    def _answered(self, input_ids: torch.LongTensor) -> torch.Tensor:
        """Rows whose generated tokens already hold a complete answer."""
        rows = input_ids[:, self.prompt_width:].tolist()
        if self.stop is None or not rows or not rows[0]:
            return torch.zeros(len(rows), dtype=torch.bool)
        return torch.tensor([self.eos not in row and self.stop(row) for row in rows])


_FENCE = re.compile(r"^[ \t]*```")
_DEF = re.compile(r"^(async[ \t]+)?def[ \t]")
# Column-0 lines that may legitimately follow a function inside an answer's code.
_CODE_STARTS = ("def ", "async ", "class ", "@", "import ", "from ", "#")


def answer_complete(text: str) -> bool:
    """Whether a generated answer is over: its fenced code block closed, or (no fence) a
    column-0 line that is not more code follows the function's indented body."""
    lines = text.split("\n")
    fences = [i for i, line in enumerate(lines) if _FENCE.match(line)]
    if fences:
        return len(fences) >= 2
    in_body = False
    for line in lines:
        if _DEF.match(line):
            in_body = False
            continue
        if line[:1] in (" ", "\t"):
            in_body = in_body or bool(line.strip())
        elif line.strip() and in_body and not line.startswith(_CODE_STARTS):
            return True
    return False


class AnswerEnd:
    """`stop` callable for RowSampler: decode a row's generated tokens, test answer_complete."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer

    def __call__(self, tokens: Sequence[int]) -> bool:
        """Whether these generated tokens hold a complete answer."""
        return answer_complete(self.tokenizer.decode(tokens, skip_special_tokens=True))


def code_only(source: str) -> str:
    """`source` without its top-level bare strings (QuixBugs appends a long description to
    each program): the code a fix has to reproduce, which the token budget is relative to."""
    import ast

    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return source
    drop = set()
    for node in tree.body:
        if (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
                and isinstance(node.value.value, str)):
            drop.update(range(node.lineno, (node.end_lineno or node.lineno) + 1))
    lines = source.splitlines(keepends=True)
    return "".join(line for i, line in enumerate(lines, 1) if i not in drop).strip("\n") + "\n"


def token_budget(knobs: CheapKnobs, buggy_tokens: int) -> int:
    """A row's max new tokens: max_new_tokens + max_new_tokens_factor x buggy function tokens."""
    return max(1, int(knobs.max_new_tokens)
               + math.ceil(float(knobs.max_new_tokens_factor) * int(buggy_tokens)))


def row_processors(knobs: Sequence[CheapKnobs], seeds: Sequence[int], layout: RowLayout,
                   eos_token_id: int, greedy: bool, limits: Optional[Sequence[int]] = None,
                   stop: Optional[Callable[[Sequence[int]], bool]] = None) -> LogitsProcessorList:
    """The processor chain for a batch whose row i uses knobs[i], seeds[i] and (if given)
    limits[i] new tokens at most (default: knobs[i].max_new_tokens); `stop` ends answers."""
    is_greedy = [greedy or k.top_k == 1 for k in knobs]
    limits = list(limits) if limits is not None else [k.max_new_tokens for k in knobs]
    return LogitsProcessorList([
        RowRepetitionPenalty([k.repetition_penalty for k in knobs], layout),
        RowTemperature([k.temperature for k in knobs]),
        RowTopK([k.top_k for k in knobs]),
        RowTopP([k.top_p for k in knobs]),
        RowSampler(seeds, is_greedy, limits, layout, eos_token_id, stop),
    ])
