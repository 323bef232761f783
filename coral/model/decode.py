"""Segmented decoding: rows whose answer is over leave the batch.

transformers' `generate` keeps every row of a batch until the last one ends: a row whose
answer closed after 40 tokens is computed (as padding) for as long as the batch's longest
answer runs. QuixBugs answers range from ~30 to ~500 tokens, so in `make run` more than half
of a batch's row-steps were such padding (a held-out batch of 16 ran 564 steps for one
rambling answer).

`decode` calls `generate` in segments of `SEGMENT` new tokens, carrying the KV cache (and
the sampling processors' per-row state) from one to the next. After a segment, rows that
ended (eos, a complete answer, their token limit) are taken out: their tokens are kept, and
the cache, the ids, the mask, the processors and the per-row adapters (peft's
`adapter_names` or coral.model.spans) are cut down to the rows that go on. Only when at
least `DROP_SHARE` of the rows ended is the batch cut (each cut copies the cache). A row's
tokens do not depend on the rows beside it (per-row seeds and knobs, coral.model.sampling),
so the texts are those of one `generate` call.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import torch

from coral.model.kvcache import new_cache
from coral.model.prefix import cache_kwarg, cache_of

SEGMENT = 32       # new tokens per generate call
DROP_SHARE = 0.25  # the batch is cut when at least this share of its rows has ended


def decode(model: Any, ids: torch.Tensor, mask: torch.Tensor, processors: Any,
           limits: Sequence[int], eos_ids: Sequence[int], pad_id: int,
           extra: Optional[dict] = None, cache: Any = None,
           before_segment: Callable[[], None] = lambda: None,
           keepers: Sequence[Any] = ()) -> list[torch.Tensor]:
    """Each row's generated tokens (past its prompt; may run past its end, the caller cuts)
    and, in `processors[-1].ended_at`, where complete answers ended (original row order).
    `before_segment` runs before each generate call (the caller sets torch's threads there:
    a core the judge held during one segment may be free for the next). `keepers` hold
    per-row state outside the processors (coral.model.spans): `keep(index)` when rows leave."""
    from transformers import GenerationConfig

    sampler = processors[-1]
    width, n_rows = ids.shape[1], ids.shape[0]
    live = list(range(n_rows))                  # original index of each row in the batch
    out: list = [None] * n_rows
    ended_at: list[Optional[int]] = [None] * n_rows
    extra = dict(extra or {})
    longest = max(limits)
    if cache is None:   # transformers' own would copy itself at every step
        cache = new_cache(model.config)
    while True:
        made = ids.shape[1] - width
        cfg = GenerationConfig(do_sample=False, num_beams=1,
                               max_new_tokens=max(1, min(SEGMENT, longest - made)),
                               eos_token_id=list(eos_ids), pad_token_id=pad_id,
                               return_dict_in_generate=True)
        before_segment()
        res = model.generate(input_ids=ids, attention_mask=mask, generation_config=cfg,
                             logits_processor=processors, **{cache_kwarg(): cache}, **extra)
        seq, cache = res.sequences, cache_of(res)
        sampler.flush()
        made = seq.shape[1] - width
        over = _ended(seq[:, width:], sampler.finished(), [limits[i] for i in live], made,
                      eos_ids)
        last = all(over)             # also when every live row reached its limit
        cut = sum(over) >= DROP_SHARE * len(live)
        if last or cut:
            for pos, o in enumerate(over):
                if o:
                    out[live[pos]], ended_at[live[pos]] = seq[pos, width:], sampler.ended_at[pos]
        if last:
            break
        mask = torch.cat([mask, mask.new_ones((mask.shape[0], seq.shape[1] - ids.shape[1]))], 1)
        ids = seq
        if cut:
            stay = [pos for pos, o in enumerate(over) if not o]
            index = torch.tensor(stay, device=ids.device)
            ids, mask = ids[index], mask[index]
            cache.batch_select_indices(index)
            for proc in [*processors, *keepers]:
                if hasattr(proc, "keep"):
                    proc.keep(index.cpu())
            if "adapter_names" in extra:
                extra["adapter_names"] = [extra["adapter_names"][p] for p in stay]
            live = [live[p] for p in stay]
            longest = max(limits[i] for i in live)
    sampler.ended_at = ended_at
    return out   # every row was recorded when it left the batch


def _ended(new: torch.Tensor, finished: Sequence[bool], limits: Sequence[int], made: int,
           eos_ids: Sequence[int]) -> list[bool]:
    """Per row: its answer is over (eos among its tokens, complete, or at its limit)."""
    has_eos = torch.zeros(new.shape[0], dtype=torch.bool, device=new.device)
    for e in eos_ids:
        has_eos |= (new == e).any(dim=1)
    eos = has_eos.tolist()
    return [bool(eos[r] or finished[r] or made >= limits[r]) for r in range(len(limits))]
