"""Generator on the tiny LLaMA with real peft adapters: batching, adapters, per-row knobs."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from coral.config import Config, GenerationConfig, ModelConfig
from coral.model.batching import plan_batches
from coral.model.generation import Generator
from coral.search.knobs import CheapKnobs
from coral.messages import AdapterRef, GenerationRequest
from coral.model.loading import load_base
from coral.model.sampling import RowLayout, RowRepetitionPenalty, RowTopK, RowTopP
from coral.adapters.store import checksum_dir

GCD = "def gcd(a, b):\n    if b == 0:\n        return a\n    else:\n        return gcd(a % b, b)\n"
BITCOUNT = ("def bitcount(n):\n    count = 0\n    while n:\n        n ^= n - 1\n"
            "        count += 1\n    return count\n")
KNOBS = CheapKnobs(temperature=0.9, top_p=0.95, top_k=40, repetition_penalty=1.1,
                   max_new_tokens=12)


def tiny_cfg(**gen) -> Config:
    """Default config on the tiny model with generation overrides."""
    return dataclasses.replace(Config(), model=ModelConfig(base="tiny"),
                               generation=GenerationConfig(**gen))


def make_adapter(root: Path, seed: int, dora: bool = False,
                 modules: tuple[str, ...] = ("q_proj", "v_proj")) -> AdapterRef:
    """Save a random (non-identity) LoRA/DoRA adapter of the tiny model; return its ref."""
    from peft import LoraConfig, get_peft_model

    model, _, _ = load_base(ModelConfig(base="tiny"))
    torch.manual_seed(seed)
    # init_lora_weights=False: B is random too, so the adapter really changes the outputs.
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=32, target_modules=list(modules),
                                                  init_lora_weights=False, use_dora=dora))
    path = root / f"adapter{seed}"
    peft_model.save_pretrained(str(path))
    return AdapterRef(key=f"key{seed}", uri=str(path), checksum=checksum_dir(path),
                      use_dora=dora)


@pytest.fixture(scope="module")
def adapters(tmp_path_factory) -> dict[str, AdapterRef]:
    """Three LoRA adapters (two module sets) and one DoRA adapter."""
    root = tmp_path_factory.mktemp("adapters")
    wide = ("q_proj", "k_proj", "v_proj", "o_proj")
    return {"a": make_adapter(root, 1), "b": make_adapter(root, 2, modules=wide),
            "c": make_adapter(root, 3), "d": make_adapter(root, 4, dora=True)}


def req(i: int, adapter, knobs: CheapKnobs = KNOBS, seed: int | None = None,
        problem: str = "gcd", source: str = GCD) -> GenerationRequest:
    """A request with a distinct id."""
    return GenerationRequest(f"r{i}", f"g{i}", problem, source, adapter, knobs,
                             seed=i if seed is None else seed)


def mixed_requests(adapters, knobs=KNOBS) -> list[GenerationRequest]:
    """Eight requests: base, three LoRA adapters, DoRA; two problems; varied lengths."""
    order = [None, adapters["a"], adapters["b"], adapters["d"], adapters["c"], adapters["a"],
             None, adapters["d"]]
    return [req(i, ad, dataclasses.replace(knobs, max_new_tokens=6 + i),
                problem="gcd" if i % 2 else "bitcount", source=GCD if i % 2 else BITCOUNT)
            for i, ad in enumerate(order)]


@pytest.mark.parametrize("greedy", [True, False])
def test_mixed_batch_rows_equal_running_each_alone(adapters, greedy):
    gen = Generator(tiny_cfg(greedy=greedy))
    reqs = mixed_requests(adapters)
    batched = gen.generate(reqs)
    alone = [gen.generate([r])[0] for r in reqs]
    assert [r.request_id for r in batched] == [r.request_id for r in reqs]
    assert [r.text for r in batched] == [r.text for r in alone]
    assert [r.new_tokens for r in batched] == [r.new_tokens for r in alone]
    assert all(r.text for r in batched)
    # Adapters are applied: the same request gives different text under each adapter.
    texts = {gen.generate([req(0, ad, seed=7)])[0].text
             for ad in (None, adapters["a"], adapters["b"], adapters["d"])}
    assert len(texts) == 4
    assert gen.base_loads == 1


def test_adapters_are_not_stacked(adapters):
    loaded_many = Generator(tiny_cfg(greedy=True))
    loaded_many.generate(mixed_requests(adapters))           # a, b, c, d all resident
    fresh = Generator(tiny_cfg(greedy=True))
    for ad in (adapters["a"], adapters["d"], None):
        probe = [req(3, ad)]
        assert loaded_many.generate(probe)[0].text == fresh.generate(probe)[0].text


def test_lru_keeps_capacity_and_never_reloads_base(adapters):
    gen = Generator(tiny_cfg(max_resident_adapters=2, batch_size=4))
    first = gen.generate(mixed_requests(adapters))
    assert len(gen.resident) <= 2
    assert len(gen._peft.peft_config) <= 2                   # evicted from peft too
    loads = gen.adapter_loads
    assert loads >= 4                                        # four adapters, two slots
    again = gen.generate(mixed_requests(adapters))
    assert [r.text for r in again] == [r.text for r in first]  # eviction loses nothing
    assert gen.adapter_loads > loads                         # it had to reload some
    assert gen.base_loads == 1
    # A hot adapter stays resident: no further loads.
    gen.generate([req(0, adapters["a"])])
    loads = gen.adapter_loads
    gen.generate([req(1, adapters["a"]), req(2, adapters["a"])])
    assert gen.adapter_loads == loads


def test_plan_batches_limits_rows_and_adapters(adapters):
    reqs = mixed_requests(adapters)
    plans = plan_batches(reqs, batch_size=3, max_adapters=1)
    assert sorted(i for p in plans for i in p.rows) == list(range(len(reqs)))
    for p in plans:
        assert len(p.rows) <= 3
        keys = {reqs[i].adapter.key for i in p.rows if reqs[i].adapter is not None}
        assert len(keys) <= 1
        if p.active_key is not None:
            assert keys == {p.active_key}
        else:
            assert not any(reqs[i].adapter and reqs[i].adapter.use_dora for i in p.rows)


def test_group_by_adapter_plans_one_adapter_per_batch(adapters):
    reqs = mixed_requests(adapters)
    plans = plan_batches(reqs, batch_size=8, max_adapters=8, group_by_adapter=True)
    assert sorted(i for p in plans for i in p.rows) == list(range(len(reqs)))
    for p in plans:
        keys = {reqs[i].adapter.key for i in p.rows if reqs[i].adapter is not None}
        # Either one adapter, run active, or only base rows: never a mixed batch.
        assert keys == ({p.active_key} if p.active_key else set())
    assert len(plans) == 5                       # base, a, b, c, d (d twice, one batch)
    mixed = plan_batches(reqs, batch_size=8, max_adapters=8)
    assert len(mixed) == 2                       # LoRA + base in one, the DoRA adapter apart


def test_grouping_by_adapter_does_not_change_any_text(adapters):
    reqs = mixed_requests(adapters)
    mixed = Generator(tiny_cfg(greedy=False)).generate(reqs)
    grouped = Generator(tiny_cfg(greedy=False, group_by_adapter=True)).generate(reqs)
    assert [r.request_id for r in grouped] == [r.request_id for r in reqs]
    assert [r.text for r in grouped] == [r.text for r in mixed]
    # Two rows each for base, a and d; one each for b and c. Mixed: 6 LoRA/base rows + 2 DoRA.
    assert sorted(r.meta["batch_size"] for r in grouped) == [1, 1, 2, 2, 2, 2, 2, 2]
    assert sorted(r.meta["batch_size"] for r in mixed) == [2, 2, 6, 6, 6, 6, 6, 6]


def test_per_row_knobs_and_lengths(adapters):
    gen = Generator(tiny_cfg(greedy=False))
    greedy = Generator(tiny_cfg(greedy=True))
    k1 = dataclasses.replace(KNOBS, top_k=1, max_new_tokens=10)
    hot = dataclasses.replace(KNOBS, temperature=5.0, top_p=1.0, top_k=1000, max_new_tokens=10)
    rows = [req(0, adapters["a"], k1, seed=1), req(1, adapters["a"], hot, seed=1),
            req(2, adapters["a"], dataclasses.replace(KNOBS, max_new_tokens=3), seed=5),
            req(3, adapters["a"], dataclasses.replace(KNOBS, max_new_tokens=15), seed=5)]
    out = gen.generate(rows)
    reference = greedy.generate([dataclasses.replace(rows[0], knobs=dataclasses.replace(
        k1, top_k=40))])[0]
    assert out[0].text == reference.text                    # top_k=1 is greedy
    assert out[1].text != out[0].text                       # a hot row samples elsewhere
    assert out[2].new_tokens <= 3 and out[3].new_tokens <= 15
    assert out[3].new_tokens > 3
    short = gen.tokenizer(out[2].text, add_special_tokens=False)["input_ids"]
    long = gen.tokenizer(out[3].text, add_special_tokens=False)["input_ids"]
    assert long[:len(short) - 1] == short[:-1]              # same seed: a prefix of the longer


def test_seeds_reproduce_and_differ(adapters):
    gen = Generator(tiny_cfg())
    a = gen.generate([req(0, adapters["a"], seed=11), req(1, None, seed=11)])
    b = gen.generate([req(1, None, seed=11), req(5, adapters["b"], seed=3),
                      req(0, adapters["a"], seed=11)])
    assert a[0].text == b[2].text and a[1].text == b[0].text
    c = gen.generate([req(0, adapters["a"], seed=12)])
    assert c[0].text != a[0].text


def test_missing_adapter_raises_not_falls_back(tmp_path):
    gen = Generator(tiny_cfg())
    ref = AdapterRef(key="nope", uri=str(tmp_path / "missing"), checksum="")
    with pytest.raises(ValueError):
        gen.generate([req(0, dataclasses.replace(ref, status="training"))])
    pytest.importorskip("coral.adapters.store")
    cfg = dataclasses.replace(gen.cfg, storage=dataclasses.replace(gen.cfg.storage,
                                                                   adapters=str(tmp_path)))
    gen.cfg, gen._store = cfg, None
    with pytest.raises(FileNotFoundError):
        gen.generate([req(0, ref)])


# --------------------------------------------------------------------------- processors

def test_row_top_k_and_top_p_filter_per_row():
    scores = torch.tensor([[4.0, 3.0, 2.0, 1.0], [4.0, 3.0, 2.0, 1.0]])
    kept = torch.isfinite(RowTopK([1, 3])(None, scores))
    assert kept.tolist() == [[True, False, False, False], [True, True, True, False]]
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05], [0.5, 0.3, 0.15, 0.05]]).log()
    kept = torch.isfinite(RowTopP([0.6, 0.9])(None, probs))
    assert kept.tolist() == [[True, True, False, False], [True, True, True, False]]


def test_repetition_penalty_ignores_left_padding_and_the_prompt():
    pad = 0
    ids = torch.tensor([[pad, pad, 2, 3], [1, 2, 3, 1]])   # prompts 3 wide, one new token
    scores = torch.tensor([[2.0, 2.0, 2.0, -2.0], [2.0, 2.0, 2.0, -2.0]])
    out = RowRepetitionPenalty([2.0, 1.0], RowLayout((2, 0), 3))(ids, scores)
    assert out.tolist() == [[2.0, 2.0, 2.0, -4.0], [2.0, 2.0, 2.0, -2.0]]


def test_mislabelled_or_tampered_adapter_raises(adapters):
    gen = Generator(tiny_cfg())
    wrong = dataclasses.replace(adapters["d"], use_dora=False, key="mislabelled")
    with pytest.raises(ValueError, match="use_dora"):
        gen.generate([req(0, wrong)])
    tampered = dataclasses.replace(adapters["a"], checksum="0" * 64, key="tampered")
    with pytest.raises(ValueError, match="checksum"):
        gen.generate([req(0, tampered)])
    assert gen.resident == ()
    assert gen.generate([req(0, adapters["a"])])[0].text   # the generator is still usable


# --------------------------------------------------------------------------- coalescing

def genome_calls(adapters) -> list[list[GenerationRequest]]:
    """Four genomes' calls: two LoRA adapters, a DoRA adapter and the base model; each
    genome has its own knobs, as in a run."""
    calls = []
    for g, (ad, n) in enumerate([(adapters["a"], 3), (adapters["b"], 3), (adapters["d"], 2),
                                 (None, 2)]):
        knobs = dataclasses.replace(KNOBS, temperature=0.6 + 0.1 * g, max_new_tokens=5 + g)
        calls.append([req(10 * g + i, ad, knobs, seed=i, problem=("gcd", "bitcount")[i % 2],
                          source=(GCD, BITCOUNT)[i % 2]) for i in range(n)])
    return calls


def test_coalesced_texts_equal_one_call_per_genome(adapters):
    from coral.model.coalesce import Coalescer

    gen = Generator(tiny_cfg(batch_size=5))
    calls = genome_calls(adapters)
    alone = [[(r.request_id, r.text, r.new_tokens) for r in gen.generate(c)] for c in calls]
    coalescer = Coalescer(gen, batch_size=5)
    tickets = [coalescer.submit(c) for c in calls]
    first = coalescer.run_until(tickets[0])
    # The first genome is back after one batch (its 3 rows + 2 of the next genome's), while
    # the DoRA and base genomes still wait: judging can start before decoding ends.
    assert coalescer.batches == 1 and not tickets[3].finished
    got = [first] + [coalescer.run_until(t) for t in tickets[1:]]
    assert [[(r.request_id, r.text, r.new_tokens) for r in rs] for rs in got] == alone
    # 10 rows in 3 batches (LoRA + base mix, DoRA alone) instead of 4 calls' 4 batches.
    assert coalescer.batches == 3 and coalescer.pending == 0


def test_coalesced_batches_hold_rows_of_the_same_program(adapters):
    """Three genomes x two programs of different length, batches of 3: each batch is one
    program's rows from every genome (not one genome's short and long rows padded together),
    and the texts are those of one call per genome."""
    from coral.model.coalesce import Coalescer

    class Recording(Generator):
        def generate(self, requests):
            self.batches.append(sorted({r.problem for r in requests}))
            return super().generate(requests)

    gen = Recording(tiny_cfg(batch_size=3))
    gen.batches = []
    calls = [[req(10 * g + i, ad, seed=i, problem=("gcd", "bitcount")[i],
                  source=(GCD, BITCOUNT)[i]) for i in range(2)]
             for g, ad in enumerate([adapters["a"], None, adapters["c"]])]
    alone = [[r.text for r in gen.generate(c)] for c in calls]
    gen.batches = []
    coalescer = Coalescer(gen, batch_size=3)
    tickets = [coalescer.submit(c) for c in calls]
    got = [[r.text for r in coalescer.run_until(t)] for t in tickets]
    assert got == alone
    assert sorted(gen.batches) == [["bitcount"], ["gcd"]]


def test_the_decoder_thread_waits_a_moment_to_fill_a_batch(adapters):
    """Two calls arriving 50 ms apart (as a round's genomes reach the Ray actor) share one
    batch instead of the first starting alone."""
    import time

    from coral.model.coalesce import Coalescer

    gen = Generator(tiny_cfg(batch_size=4))
    coalescer = Coalescer(gen, batch_size=4)
    coalescer.start()
    try:
        first = coalescer.submit([req(0, adapters["a"]), req(1, None)])
        time.sleep(0.05)
        second = coalescer.submit([req(2, adapters["c"]), req(3, None)])
        assert len(coalescer.wait(first)) == 2 and len(coalescer.wait(second)) == 2
        assert coalescer.batches == 1
    finally:
        coalescer.close()


def test_a_failed_batch_fails_its_calls_and_the_queue_goes_on(adapters, tmp_path):
    from coral.model.coalesce import Coalescer

    gen = Generator(tiny_cfg(batch_size=4))
    missing = AdapterRef(key="gone", uri=str(tmp_path / "gone"), checksum="", use_dora=True)
    coalescer = Coalescer(gen, batch_size=4)
    broken = coalescer.submit([req(0, missing)])
    fine = coalescer.submit([req(1, adapters["a"])])
    with pytest.raises(FileNotFoundError):
        coalescer.run_until(broken)
    assert coalescer.run_until(fine)[0].text == gen.generate([req(1, adapters["a"])])[0].text


def test_frozen_dora_scale_gives_peft_dora_logits(adapters):
    from peft import PeftModel

    from coral.model.dora import freeze_dora

    model, tokenizer, _ = load_base(ModelConfig(base="tiny"))
    peft_model = PeftModel.from_pretrained(model, adapters["d"].uri, adapter_name="d").eval()
    ids = torch.tensor([tokenizer(GCD)["input_ids"]])
    with torch.inference_mode():
        expected = peft_model(input_ids=ids).logits
        assert freeze_dora(peft_model, "d") == 4     # q and v of both layers
        got = peft_model(input_ids=ids).logits
    assert torch.allclose(got, expected, atol=1e-5)


# --------------------------------------------------------------------------- prompt cache

def test_prompt_cache_gives_the_same_texts_and_prefills_each_prompt_once(adapters):
    """Base, LoRA and DoRA rows, mixed and alone, twice over: with the cache every (adapter,
    program) is prefilled once and the texts are those of prefilling every batch."""
    calls = genome_calls(adapters)
    every = [r for c in calls for r in c]
    plain = Generator(tiny_cfg(batch_size=5, prompt_cache_mib=0))
    cached = Generator(tiny_cfg(batch_size=5))   # its own model: peft wraps it in place
    want = [(r.request_id, r.text) for r in plain.generate(every)]
    assert [(r.request_id, r.text) for r in cached.generate(every)] == want
    stats = cached.stats()["prompt_cache"]
    distinct = {(None if r.adapter is None else r.adapter.key, r.problem) for r in every}
    assert stats["misses"] == len(distinct) == stats["entries"]
    # again, one genome at a time: nothing is prefilled again, and the texts stay
    assert [(r.request_id, r.text) for c in calls for r in cached.generate(c)] == want
    assert cached.stats()["prompt_cache"]["misses"] == len(distinct)
    assert plain.stats()["prompt_cache"] is None


def test_prompt_cache_keeps_within_its_size_and_forgets_evicted_adapters(adapters):
    from coral.model.prefix import PromptCache

    gen = Generator(tiny_cfg(batch_size=2, max_resident_adapters=1))
    gen.generate([req(0, adapters["a"]), req(1, adapters["a"], problem="bitcount",
                                                source=BITCOUNT)])
    assert len(gen.prompt_cache) == 2
    gen.generate([req(2, adapters["c"])])        # a's eviction drops a's entries
    assert {k[0] for k in gen.prompt_cache._entries} == {adapters["c"].key}
    one = gen.prompt_cache.bytes
    small = PromptCache(max_bytes=one)           # room for one entry: the older one goes
    small.rows([("x", 1)], lambda k: gen.prompt_cache._entries[(adapters["c"].key,
                                                                  ("gcd", GCD))])
    small.rows([("x", 2)], lambda k: gen.prompt_cache._entries[(adapters["c"].key,
                                                                  ("gcd", GCD))])
    assert [k for k in small._entries] == [("x", 2)] and small.bytes == one


# --------------------------------------------------------------------------- segmented decoding

@pytest.mark.parametrize("segment", [1, 3])
def test_rows_leaving_the_batch_keep_the_texts_of_one_generate_call(adapters, monkeypatch,
                                                                    segment):
    """Mixed LoRA/base rows and a DoRA batch, answers of different lengths: decoding in short
    segments, ended rows cut out of the batch and its cache, gives the texts, token counts
    and answer ends of one generate call over the whole batch."""
    from coral.model import decode as decoding

    reqs = mixed_requests(adapters, dataclasses.replace(KNOBS, max_new_tokens=20))
    monkeypatch.setattr(decoding, "SEGMENT", 10**6)          # one call, no row leaves
    whole = [(r.text, r.new_tokens) for r in Generator(tiny_cfg(batch_size=8)).generate(reqs)]
    monkeypatch.setattr(decoding, "SEGMENT", segment)
    monkeypatch.setattr(decoding, "DROP_SHARE", 0.01)        # any ended row leaves at once
    cut = Generator(tiny_cfg(batch_size=8))
    rows_per_segment = []
    real = decoding._ended

    def counting(new, *args):
        rows_per_segment.append(new.shape[0])
        return real(new, *args)

    monkeypatch.setattr(decoding, "_ended", counting)
    assert [(r.text, r.new_tokens) for r in cut.generate(reqs)] == whole
    # rows did leave: later segments decode fewer rows than the first of their batch
    assert len(rows_per_segment) > 2 and min(rows_per_segment) < max(rows_per_segment)
