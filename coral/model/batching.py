"""Which requests decode together: `plan_batches` cuts one generate call into batches.

LoRA and base rows mix (at most `max_adapters` adapters a batch); a DoRA adapter's rows, and
with `group_by_adapter` every adapter's, form batches of their own that run with it active.
Rows are ordered by adapter key (the LRU swaps as little as possible), then by prompt length
(a batch's rows pad little); the order changes no row's output (coral.model.sampling).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from coral.messages import GenerationRequest


@dataclass(frozen=True)
class BatchPlan:
    """Indices (into the request list) of one batch, and the one adapter it runs with active
    (DoRA rows; every adapter batch when grouping by adapter), if any."""

    rows: tuple[int, ...]
    active_key: Optional[str] = None


def plan_batches(requests: Sequence[GenerationRequest], batch_size: int,
                 max_adapters: int, group_by_adapter: bool = False,
                 lengths: Optional[Sequence[int]] = None) -> list[BatchPlan]:
    """Group requests: LoRA and base rows mixed (<= max_adapters a batch), DoRA per adapter;
    with `group_by_adapter`, LoRA rows per adapter too and base rows on their own.

    Rows are ordered by adapter key so that requests for one adapter run together and the
    LRU swaps as little as possible, then by prompt length (`lengths`, if given) so that a
    batch's rows pad little; the order does not change any row's output.
    """
    size = (lambda i: lengths[i]) if lengths is not None else (lambda i: 0)
    mixed: list[int] = []
    single: dict[str, list[int]] = {}
    for i, req in enumerate(requests):
        if req.adapter is not None and (req.adapter.use_dora or group_by_adapter):
            single.setdefault(req.adapter.key, []).append(i)
        else:
            mixed.append(i)
    mixed.sort(key=lambda i: ("" if requests[i].adapter is None else requests[i].adapter.key,
                              size(i), i))
    plans = _mixed_plans(requests, mixed, batch_size, max_adapters)
    for key in sorted(single):
        idx = sorted(single[key], key=lambda i: (size(i), i))
        for start in range(0, len(idx), batch_size):
            plans.append(BatchPlan(tuple(idx[start:start + batch_size]), active_key=key))
    return plans


def _mixed_plans(requests: Sequence[GenerationRequest], order: list[int], batch_size: int,
                 max_adapters: int) -> list[BatchPlan]:
    """Cut rows (in order) into batches of <= batch_size rows and <= max_adapters adapters."""
    plans: list[BatchPlan] = []
    rows: list[int] = []
    keys: set[str] = set()
    for i in order:
        ref = requests[i].adapter
        new_key = ref is not None and ref.key not in keys
        if rows and (len(rows) >= batch_size or (new_key and len(keys) >= max_adapters)):
            plans.append(BatchPlan(tuple(rows)))
            rows, keys = [], set()
        rows.append(i)
        if ref is not None:
            keys.add(ref.key)
    if rows:
        plans.append(BatchPlan(tuple(rows)))
    return plans
