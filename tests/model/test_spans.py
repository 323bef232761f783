"""Mixed-adapter batches as slices (coral.model.spans) against peft's `adapter_names`."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from coral.model import decode as decoding
from coral.model import spans
from coral.model.generation import Generator
from tests.model.test_generation import (BITCOUNT, GCD, KNOBS, make_adapter, mixed_requests,
                                         req, tiny_cfg)


@pytest.fixture(scope="module")
def refs(tmp_path_factory):
    """Two LoRA adapters on q/v, one on q/k/v/o (layers the others do not touch), one DoRA."""
    root = tmp_path_factory.mktemp("span-adapters")
    return {"a": make_adapter(root, 21), "b": make_adapter(root, 22),
            "w": make_adapter(root, 23, modules=("q_proj", "k_proj", "v_proj", "o_proj")),
            "d": make_adapter(root, 24, dora=True)}


def test_row_spans_are_runs_of_one_adapter_and_skip_base_rows():
    assert spans.row_spans(["x", "x", None, "y", "y", "y", None]) == [("x", 0, 2), ("y", 3, 6)]
    assert spans.row_spans([None, None]) == []


def _requests(refs) -> list:
    order = [None, refs["a"], refs["w"], refs["b"], refs["a"], None, refs["w"], refs["b"]]
    return [req(i, ad, dataclasses.replace(KNOBS, max_new_tokens=8 + 2 * i),
                problem="gcd" if i % 2 else "bitcount", source=GCD if i % 2 else BITCOUNT)
            for i, ad in enumerate(order)]


@pytest.mark.parametrize("greedy", [True, False])
def test_slices_give_the_texts_of_peft_adapter_names(refs, monkeypatch, greedy):
    """Base and three LoRA adapters (two module sets) in one batch, rows leaving it after
    short segments: the texts with slices equal those with peft's per-row split, and the
    slices were used."""
    monkeypatch.setattr(decoding, "SEGMENT", 4)
    monkeypatch.setattr(decoding, "DROP_SHARE", 0.01)
    reqs = _requests(refs)
    entered = []
    real_enter = spans.AdapterSpans.__enter__
    monkeypatch.setattr(spans.AdapterSpans, "__enter__",
                        lambda self: entered.append(list(self.names)) or real_enter(self))
    sliced = [r.text for r in Generator(tiny_cfg(batch_size=8, greedy=greedy)).generate(reqs)]
    assert len(entered) == 1 and len(entered[0]) == 8
    monkeypatch.setattr(spans, "supported", lambda model, names: False)
    named = [r.text for r in Generator(tiny_cfg(batch_size=8, greedy=greedy)).generate(reqs)]
    assert sliced == named and len(set(sliced)) > 2


def test_slices_compute_peft_logits_and_hooks_go_away(refs):
    """One forward pass: logits with slices match peft's adapter_names; afterwards the
    layers have no hooks left and peft's adapters are on again."""
    gen = Generator(tiny_cfg(batch_size=8))
    reqs = _requests(refs)
    gen.ensure_resident([r.adapter for r in reqs if r.adapter is not None])
    reqs = sorted(reqs, key=lambda r: "" if r.adapter is None else r.adapter.key)
    ids, mask, _ = gen._encode(reqs)
    names = [None if r.adapter is None else gen._resident[r.adapter.key] for r in reqs]
    assert spans.supported(gen._peft, names)
    assert not spans.supported(gen._peft, names[::-1][:3] + names[3:])   # not one run each
    with torch.inference_mode():
        want = gen._peft(input_ids=ids, attention_mask=mask,
                         adapter_names=["__base__" if n is None else n for n in names]).logits
        with spans.AdapterSpans(gen._peft, names):
            got = gen._peft(input_ids=ids, attention_mask=mask).logits
        with gen._peft.disable_adapter():
            base = gen._peft(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    adapted = [i for i, n in enumerate(names) if n is not None]
    assert not torch.allclose(got[adapted], base[adapted])      # the adapters did act
    torch.testing.assert_close(got[:adapted[0]], base[:adapted[0]])
    from peft.tuners.lora import LoraLayer
    layers = [m for m in gen._peft.modules() if isinstance(m, LoraLayer)]
    assert layers and all(not m._forward_hooks and not m.disable_adapters for m in layers)


def test_a_dora_adapter_is_left_to_peft(refs):
    gen = Generator(tiny_cfg(batch_size=8))
    gen.ensure_resident([refs["a"], refs["d"]])
    names = [gen._resident[refs["a"].key], gen._resident[refs["d"].key]]
    assert not spans.supported(gen._peft, names)
    assert spans.supported(gen._peft, names[:1])


def test_mixed_requests_with_dora_still_match_each_alone(refs):
    """The generator's own mixed set (base, LoRA, DoRA rows) through the sliced path equals
    each request decoded alone."""
    adapters = {"a": refs["a"], "b": refs["w"], "c": refs["b"], "d": refs["d"]}
    reqs = mixed_requests(adapters)
    gen = Generator(tiny_cfg(batch_size=8))
    together = [r.text for r in gen.generate(reqs)]
    alone = [gen.generate([r])[0].text for r in reqs]
    assert together == alone
