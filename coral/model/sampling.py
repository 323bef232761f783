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
from typing import Any, Callable, Optional, Protocol, Sequence

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from coral.search.knobs import CheapKnobs


class StopFactory(Protocol):
    """Makes the end-of-answer check of a batch (AnswerEnd is the one generation uses)."""

    def for_rows(self, n: int) -> Any:
        """`check(row, token)`: feed row's next generated token; whether its answer is over;
        `check.keep(rows)`: only these rows go on (coral.model.decode cuts ended rows)."""


@dataclass(frozen=True)
class RowLayout:
    """Where each row's real tokens start in the left-padded batch, and its prompt width."""

    pad_lengths: tuple[int, ...]
    prompt_width: int


def _on(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """`tensor` on `device` (callers keep the moved copy: one transfer per batch, not per step)."""
    return tensor if tensor.device == device else tensor.to(device, non_blocking=True)


class RowRepetitionPenalty(LogitsProcessor):
    """transformers' repetition penalty with one penalty per row, over generated tokens only.

    The set of tokens a row generated is kept as a mask and updated with each step's new
    token, not rebuilt from the whole output every step.
    """

    def __init__(self, penalties: Sequence[float], layout: RowLayout) -> None:
        self.penalty = torch.tensor(list(penalties), dtype=torch.float32)[:, None]
        self.active = any(float(p) != 1.0 for p in penalties)  # known here: no per-step check
        self.prompt_width = layout.prompt_width
        self._seen: Optional[torch.Tensor] = None
        self._counted = 0   # generated tokens already in _seen

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        """Divide positive (multiply negative) logits of tokens the row already generated."""
        scores = scores.float()
        n = input_ids.shape[1] - self.prompt_width
        if not self.active or n == 0:
            return scores
        # The prompt (and its left padding) is not counted: see the module docstring.
        if self._seen is None or self._seen.shape != scores.shape or n < self._counted:
            self._seen, self._counted = torch.zeros_like(scores, dtype=torch.bool), 0
        new = input_ids[:, self.prompt_width + self._counted:]
        self._seen.scatter_(1, new, True)
        self._counted = n
        self.penalty = penalty = _on(self.penalty, scores.device)
        penalised = torch.where(scores < 0, scores * penalty, scores / penalty)
        return torch.where(self._seen, penalised, scores)

    def keep(self, index: torch.Tensor) -> None:
        """Only these rows go on (the seen-set is rebuilt from their output next step)."""
        self.penalty, self._seen = self.penalty[index.to(self.penalty.device)], None


class RowTemperature(LogitsProcessor):
    """Divide each row's logits by its own temperature."""

    def __init__(self, temperatures: Sequence[float]) -> None:
        self.temperature = torch.tensor(list(temperatures), dtype=torch.float32)[:, None]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        """Scaled logits."""
        self.temperature = _on(self.temperature, scores.device)
        return scores.float() / self.temperature

    def keep(self, index: torch.Tensor) -> None:
        """Only these rows go on."""
        self.temperature = self.temperature[index.to(self.temperature.device)]


class RowTopK(LogitsProcessor):
    """Keep each row's k highest logits (exactly k: a tie at the k-th value is broken by
    torch.topk's order, so RowTopP after it knows how many tokens are left without asking
    the device)."""

    def __init__(self, top_ks: Sequence[int]) -> None:
        ks = [max(1, int(k)) for k in top_ks]
        self.top_k = torch.tensor(ks)[:, None]
        self.k_max = max(ks)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        """Logits outside each row's k largest set to -inf."""
        scores = scores.float()
        width = min(self.k_max, scores.shape[1])
        # topk of the largest k in the batch, not a full sort: the vocabulary is ~50k wide.
        order = torch.topk(scores, width, dim=-1).indices
        self.top_k = _on(self.top_k, scores.device)
        rank = torch.arange(width, device=scores.device)[None, :]
        keep = torch.zeros_like(scores, dtype=torch.bool).scatter_(1, order, rank < self.top_k)
        return scores.masked_fill(~keep, float("-inf"))

    def keep(self, index: torch.Tensor) -> None:
        """Only these rows go on."""
        self.top_k = self.top_k[index.to(self.top_k.device)]


class RowTopP(LogitsProcessor):
    """Nucleus filtering with one top_p per row; the most likely token is always kept.

    `width`: how many tokens can still be finite (RowTopK's largest k); the nucleus is found
    among the `width` most likely only, which is exact when no more are finite and far
    cheaper than sorting the whole vocabulary (the default).
    """

    def __init__(self, top_ps: Sequence[float], width: Optional[int] = None) -> None:
        self.top_p = torch.tensor(list(top_ps), dtype=torch.float32)[:, None]
        self.active = any(float(p) < 1.0 for p in top_ps)
        self.width = width

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        """Logits outside each row's nucleus set to -inf."""
        scores = scores.float()
        if not self.active:
            return scores
        width = min(self.width or scores.shape[1], scores.shape[1])
        top, order = torch.topk(scores, width, dim=-1, sorted=True)
        probs = top.softmax(dim=-1)
        before = probs.cumsum(dim=-1) - probs  # mass strictly before each token
        self.top_p = _on(self.top_p, scores.device)
        keep_sorted = before < self.top_p
        keep = torch.zeros_like(scores, dtype=torch.bool).scatter_(1, order, keep_sorted)
        return scores.masked_fill(~keep, float("-inf"))

    def keep(self, index: torch.Tensor) -> None:
        """Only these rows go on."""
        self.top_p = self.top_p[index.to(self.top_p.device)]


class RowSampler(LogitsProcessor):
    """Draw each row's next token with its own random stream; rows past their length, or
    whose answer is complete (`stop`), get eos.

    Returns logits that are 0 at the chosen token and -inf elsewhere, so generate() in greedy
    mode emits exactly the chosen token. Each row's uniforms are drawn up front from a CPU
    generator seeded with the row's seed, one per step whatever the row's state, so a row's
    random stream is a function of its seed and step only, on any device.

    No step waits for the device: knobs and uniforms are device tensors, and the end-of-answer
    check reads only each step's new tokens. On CUDA those are copied to the host without
    blocking and checked one step later; `ended_at[row]` records how many tokens the complete
    answer had, and the caller cuts the row there, so the text is the same as with an
    immediate check.
    """

    def __init__(self, seeds: Sequence[int], greedy: Sequence[bool], max_new: Sequence[int],
                 layout: RowLayout, eos_token_id: int, stop: Optional["StopFactory"] = None) -> None:
        steps = max(int(m) for m in max_new) + 1
        self.uniforms = torch.stack([
            torch.rand(steps, generator=torch.Generator(device="cpu").manual_seed(
                int(s) & (2**63 - 1))) for s in seeds])
        self.greedy = torch.tensor([bool(g) for g in greedy])
        self.max_new = torch.tensor([int(m) for m in max_new])
        self.prompt_width = layout.prompt_width
        self.eos = int(eos_token_id)
        self.stop = stop.for_rows(len(seeds)) if stop is not None else None
        self.ended_at: list[Optional[int]] = [None] * len(seeds)
        self._finished = [False] * len(seeds)      # eos seen or answer complete
        self._ended = torch.zeros(len(seeds), dtype=torch.bool)
        self._pending: Optional[tuple] = None      # CUDA: (n, host copy, event) of a step

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        """One-hot (0 / -inf) logits of the chosen token per row."""
        scores = scores.float()
        device = scores.device
        n = input_ids.shape[1] - self.prompt_width   # tokens generated so far (host int)
        if self.stop is not None and n > 0:
            self._track(input_ids[:, -1], n)
        self.uniforms, self.greedy = _on(self.uniforms, device), _on(self.greedy, device)
        self.max_new, self._ended = _on(self.max_new, device), _on(self._ended, device)
        probs = scores.softmax(dim=-1)
        # Inverse-CDF in token-id order: a tiny numeric change of the logits (another batch
        # shape) moves the CDF by a tiny amount, so the drawn token almost never changes.
        cdf = probs.cumsum(dim=-1)
        target = (self.uniforms[:, min(n, self.uniforms.shape[1] - 1)] * cdf[:, -1])[:, None]
        sampled = torch.searchsorted(cdf, target).squeeze(-1).clamp_(max=scores.shape[1] - 1)
        chosen = torch.where(self.greedy, scores.argmax(dim=-1), sampled)
        done = (self.max_new <= n) | self._ended
        chosen = torch.where(done, torch.full_like(chosen, self.eos), chosen)
        out = torch.full_like(scores, float("-inf"))
        return out.scatter_(1, chosen[:, None], 0.0)

    def flush(self) -> None:
        """Feed the stop check the step a CUDA batch still holds back (a generate call
        ended: every row's end must be known before rows leave the batch)."""
        if self._pending is not None:
            (n, host, event), self._pending = self._pending, None
            event.synchronize()
            self._feed(host.tolist(), n)

    def finished(self) -> list[bool]:
        """Per row: eos seen or answer complete (as of the last step fed)."""
        return list(self._finished)

    def keep(self, index: torch.Tensor) -> None:
        """Only these rows go on (`ended_at` and the stop check follow them)."""
        rows = index.tolist()
        dev = self.uniforms.device
        self.uniforms, self.greedy = self.uniforms[index.to(dev)], self.greedy[index.to(dev)]
        self.max_new, self._ended = self.max_new[index.to(dev)], self._ended[index.to(dev)]
        self.ended_at = [self.ended_at[r] for r in rows]
        self._finished = [self._finished[r] for r in rows]
        if self.stop is not None:
            self.stop.keep(rows)

    def _track(self, last: torch.Tensor, n: int) -> None:
        """Feed the stop check the tokens of step n (on CUDA: those of the step before)."""
        if last.device.type != "cuda":
            self._feed(last.tolist(), n)
            return
        host = torch.empty(last.shape, dtype=last.dtype, pin_memory=True)
        host.copy_(last, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        ready, self._pending = self._pending, (n, host, event)
        if ready is not None:
            ready[2].synchronize()   # that step's kernels are long done: no stall
            self._feed(ready[1].tolist(), ready[0])

    def _feed(self, tokens: Sequence[int], n: int) -> None:
        """Rows whose answer is complete with their n-th token end (eos from now on)."""
        changed = False
        for row, token in enumerate(tokens):
            if self._finished[row]:
                continue
            if token == self.eos:
                self._finished[row] = True
            elif self.stop(row, token):
                self._finished[row] = changed = True
                self.ended_at[row] = n
        if changed:   # a host-to-device copy, only on the steps where some answer ended
            ended = torch.tensor([e is not None for e in self.ended_at])
            self._ended = ended.to(self._ended.device, non_blocking=True)


_FENCE = re.compile(r"^[ \t]*```")
_DEF = re.compile(r"^(async[ \t]+)?def[ \t]")
# Column-0 lines that may legitimately follow a function inside an answer's code.
_CODE_STARTS = ("def ", "async ", "class ", "@", "import ", "from ", "#")


def _scan(line: str, in_body: bool) -> tuple[bool, bool]:
    """One line of an unfenced answer: (in a function body after it, answer complete)."""
    if _DEF.match(line):
        return False, False
    if line[:1] in (" ", "\t"):
        return in_body or bool(line.strip()), False
    return in_body, bool(line.strip()) and in_body and not line.startswith(_CODE_STARTS)


def answer_complete(text: str) -> bool:
    """Whether a generated answer is over: its fenced code block closed, or (no fence) a
    column-0 line that is not more code follows the function's indented body."""
    lines = text.split("\n")
    fences = sum(1 for line in lines if _FENCE.match(line))
    if fences:
        return fences >= 2
    in_body = False
    for line in lines:
        in_body, complete = _scan(line, in_body)
        if complete:
            return True
    return False


class _RowAnswer:
    """`answer_complete` of one row's text, fed one token at a time.

    Finished lines are folded into a small state (fence count, in a function body, complete
    without a fence); only the current line is decoded again at each step, so a step costs
    the length of one line, not of the whole answer.
    """

    __slots__ = ("fences", "in_body", "unfenced", "line", "skip")

    def __init__(self) -> None:
        self.fences, self.in_body, self.unfenced = 0, False, False
        self.line: list[int] = []   # tokens from the one holding the last newline on
        self.skip = 0               # characters of decode(line) before the current line

    def feed(self, token: int, decode: Callable[[list[int]], str]) -> bool:
        """Add one token; whether the text so far is a complete answer."""
        self.line.append(token)
        text = decode(self.line)[self.skip:]
        if "\n" in text:
            *done, text = text.split("\n")
            for line in done:
                self.fences += bool(_FENCE.match(line))
                self.in_body, complete = _scan(line, self.in_body)
                self.unfenced = self.unfenced or complete
            self.line = [token]
            self.skip = max(0, len(decode(self.line)) - len(text))
        fences = self.fences + bool(_FENCE.match(text))
        if fences:
            return fences >= 2
        return self.unfenced or _scan(text, self.in_body)[1]


class AnswerEnd:
    """`stop` for RowSampler: whether each row's generated text is a complete answer
    (`answer_complete`), checked incrementally on each step's new token."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer

    def _decode(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=True)

    def for_rows(self, n: int) -> "RowChecks":
        """A check for a batch of n rows: `check(row, token)` feeds the row's next token."""
        return RowChecks([_RowAnswer() for _ in range(n)], self._decode)


class RowChecks:
    """The answer-end state of a batch's rows; `keep` follows rows leaving the batch."""

    def __init__(self, rows: list, decode: Callable[[list[int]], str]) -> None:
        self.rows, self.decode = rows, decode

    def __call__(self, row: int, token: int) -> bool:
        return self.rows[row].feed(token, self.decode)

    def keep(self, rows: Sequence[int]) -> None:
        self.rows = [self.rows[r] for r in rows]


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
                   stop: Optional["StopFactory"] = None) -> LogitsProcessorList:
    """The processor chain for a batch whose row i uses knobs[i], seeds[i] and (if given)
    limits[i] new tokens at most (default: knobs[i].max_new_tokens); `stop` ends answers."""
    is_greedy = [greedy or k.top_k == 1 for k in knobs]
    limits = list(limits) if limits is not None else [k.max_new_tokens for k in knobs]
    return LogitsProcessorList([
        RowRepetitionPenalty([k.repetition_penalty for k in knobs], layout),
        RowTemperature([k.temperature for k in knobs]),
        RowTopK([k.top_k for k in knobs]),
        RowTopP([k.top_p for k in knobs], width=max(max(1, int(k.top_k)) for k in knobs)),
        RowSampler(seeds, is_greedy, limits, layout, eos_token_id, stop),
    ])
