"""QuixBugs loading, comparison and split on the real data."""

from __future__ import annotations

import pytest

from pathlib import Path

from coral.config.judge import QUIXBUGS_SEARCH_ORDER
from coral.judge import codec, quixbugs
from coral.judge.quixbugs import (DatasetError, load_problems, outputs_match, resolve_path, select,
                            signature, split)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def problems(quixbugs_dir):
    return load_problems(quixbugs_dir)


def test_all_forty_loaded_with_signatures(problems):
    assert len(problems) == 40
    names = {p.name for p in problems}
    assert {"breadth_first_search", "shortest_path_lengths", "topological_ordering",
            "detect_cycle", "reverse_linked_list", "gcd"} <= names
    gcd = next(p for p in problems if p.name == "gcd")
    assert gcd.parameters == ("a", "b") and gcd.function == "gcd"
    assert all(p.tests for p in problems)
    assert "def gcd" in gcd.buggy_source and gcd.buggy_source != gcd.reference_source


def test_upstream_slow_cases_skipped(problems):
    by = {p.name: p for p in problems}
    assert len(by["knapsack"].tests) == 9      # 10 upstream, 1 skipped as slow
    assert len(by["levenshtein"].tests) == 6   # 7 upstream, 1 skipped as slow
    assert all(codec.loads(t.inputs)[0] != 6404180 for t in by["knapsack"].tests)


def test_graph_cases_are_data_without_answers(problems):
    spl = next(p for p in problems if p.name == "shortest_path_length")
    assert len(spl.tests) == 4 and spl.tests[3].expected == float("inf")
    assert spl.tests[0].graph and "expected" not in spl.tests[0].graph
    args = codec.loads(spl.tests[0].inputs)
    assert isinstance(args[1], codec.NodeRef)


def test_missing_checkout_error_names_every_place_and_the_command(tmp_path, monkeypatch):
    monkeypatch.delenv("CORAL_QUIXBUGS", raising=False)
    monkeypatch.setenv("CORAL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(quixbugs, "__file__", str(tmp_path / "x" / "coral" / "judge" / "q.py"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(quixbugs.DatasetNotFound) as info:
        resolve_path(None)
    text = str(info.value)
    assert QUIXBUGS_SEARCH_ORDER in text and "coral data pull --from PATH" in text
    for place in ("dataset.quixbugs: not set", "$CORAL_QUIXBUGS: not set",
                  f"coral data pull: {tmp_path}/cache/quixbugs missing",
                  f"beside {tmp_path}/x: {tmp_path}/shared/quixbugs missing",      # checkout
                  f"beside {tmp_path}: {tmp_path.parent}/shared/quixbugs missing"):  # cwd
        assert place in text, (place, text)
    # a location that is set but wrong is an error about that setting, not a search
    with pytest.raises(DatasetError, match="python_programs") as wrong:
        resolve_path(tmp_path)
    assert not isinstance(wrong.value, quixbugs.DatasetNotFound)


def test_search_order_config_env_prepared_sibling(tmp_path, monkeypatch, quixbugs_dir):
    """Each place wins over the ones after it, and the sibling is found beside the cwd."""
    checkout = tmp_path / "elsewhere" / "x"      # no ../shared beside it
    monkeypatch.setattr(quixbugs, "__file__", str(checkout / "coral" / "judge" / "q.py"))
    (tmp_path / "x").mkdir()
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "quixbugs").symlink_to(quixbugs_dir)
    prepared = tmp_path / "cache" / "quixbugs"
    prepared.parent.mkdir()
    prepared.symlink_to(quixbugs_dir)
    other = tmp_path / "other"
    other.symlink_to(quixbugs_dir)
    monkeypatch.setenv("CORAL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CORAL_QUIXBUGS", str(other))
    monkeypatch.chdir(tmp_path / "x")
    assert resolve_path(str(quixbugs_dir)) == quixbugs_dir        # the config first
    monkeypatch.setenv("CORAL_QUIXBUGS", str(quixbugs_dir))
    assert resolve_path(None) == quixbugs_dir                      # then the environment
    monkeypatch.delenv("CORAL_QUIXBUGS")
    places = [where for where, _ in quixbugs.search_places(None)]
    assert places[:3] == ["dataset.quixbugs", "$CORAL_QUIXBUGS", "coral data pull"]
    assert resolve_path(None) == quixbugs_dir                      # then the prepared copy
    prepared.unlink()
    assert resolve_path(None) == quixbugs_dir                      # then ../shared beside cwd
    (tmp_path / "shared" / "quixbugs").unlink()
    with pytest.raises(quixbugs.DatasetNotFound):
        resolve_path(None)


def test_config_doc_and_readme_say_the_search_order():
    from dataclasses import fields

    from coral.config.judge import DatasetConfig

    doc = next(f for f in fields(DatasetConfig) if f.name == "quixbugs").metadata["doc"]
    assert QUIXBUGS_SEARCH_ORDER in doc
    readme = " ".join((REPO / "README.md").read_text().replace("`", "").split())
    assert QUIXBUGS_SEARCH_ORDER.replace("`", "") in readme


def test_select_and_unknown(problems):
    assert [p.name for p in select(problems, ["gcd", "sqrt"])] == ["gcd", "sqrt"]
    assert len(select(problems, [])) == 40
    with pytest.raises(ValueError, match="nope"):
        select(problems, ["gcd", "nope"])


def test_split_deterministic_and_order_free(problems):
    train, held = split(problems, 0.25, 7)
    assert len(held) == 10 and len(train) == 30
    assert not {p.name for p in train} & {p.name for p in held}
    train2, held2 = split(tuple(reversed(problems)), 0.25, 7)
    assert {p.name for p in held2} == {p.name for p in held}
    _, held3 = split(problems, 0.25, 8)
    assert {p.name for p in held3} != {p.name for p in held}
    assert split(problems, 0.0, 0)[1] == ()


def test_outputs_match_normalises_like_upstream():
    assert outputs_match([(1, 3), (1, 2)], [[1, 3], [1, 2]])
    assert outputs_match(1.41666666, 1.4166666666666665)
    assert outputs_match(1.45, 1.5, abs_tol=0.1) and not outputs_match(1.3, 1.5, abs_tol=0.1)
    assert outputs_match({(0, 1): float("inf")}, {(0, 1): float("inf")})
    assert outputs_match({(1, 2)}, {(1, 2)}) and not outputs_match([(1, 2)], {(1, 2)})
    assert not outputs_match([1, 2], [1, 2, 3]) and not outputs_match("12", [1, 2])
    assert not outputs_match(None, 0) and outputs_match(True, 1)


def test_signature():
    assert signature("def f(a, b=1):\n    pass\n", "f") == ("a", "b")
    assert signature("def g():\n    pass\n", "f") is None
    assert signature("def f(:\n", "f") is None


def test_codec_round_trip_and_rejects():
    value = [1, (2, 3), {4}, {(1, 2): "x"}, float("inf"), None, True, "s"]
    assert codec.loads(codec.dumps(value)) == value
    assert codec.loads(codec.dumps(x for x in range(3))) == [0, 1, 2]
    with pytest.raises(codec.Unserialisable):
        codec.dumps(object())
    with pytest.raises(codec.Unserialisable):
        codec.dumps(iter(range(10 ** 9)))
    with pytest.raises(ValueError):
        codec.loads('{"evil": 1}')
    with pytest.raises(ValueError):
        codec.loads('{"s": [[1]]}')


def test_results_are_compared_without_hashing_candidate_data():
    """A forged frame of 80k integers that share one hash (k * (2**61 - 1)): decoded into a
    sorted Bag and compared in well under a second (a set or dict of them took 36 s)."""
    import json
    import time
    text = json.dumps({"s": [k * (2**61 - 1) for k in range(80_000)]})
    pairs = json.dumps({"d": [[k * (2**61 - 1), k] for k in range(80_000)]})
    t0 = time.perf_counter()
    bag, mapping = codec.loads_result(text), codec.loads_result(pairs)
    assert not outputs_match(bag, {1, 2}) and not outputs_match(mapping, {1: 2})
    assert time.perf_counter() - t0 < 2.0
    assert type(bag) is codec.Bag and type(mapping) is codec.Pairs


def test_canonical_results_keep_set_and_dict_semantics():
    got = codec.loads_result(codec.dumps({(1, 2), (1, 3)}))
    assert outputs_match(got, {(1, 3), (1, 2)}) and not outputs_match(got, {(1, 2)})
    assert outputs_match(codec.loads_result('{"s": [1, 1.0, true]}'), {1})  # one element
    assert not outputs_match(codec.loads_result('{"s": [[1, 2]]}'), {(1, 2)})  # list != tuple
    shortest = codec.loads_result(codec.dumps({"A": 0, "B": 1.0000000001}))
    assert outputs_match(shortest, {"B": 1, "A": 0})  # values with upstream tolerance
    assert not outputs_match(shortest, {"A": 0, "C": 1})
    assert outputs_match(codec.loads_result('{"d": [["a", 1], ["a", 2]]}'), {"a": 2})  # last wins
    with pytest.raises(ValueError):
        codec.loads_result('{"s": [1], "t": [2]}')
    with pytest.raises(ValueError):
        codec.loads_result('{"d": [[1]]}')
    with pytest.raises(ValueError):
        codec.loads_result("[" * 1000 + "]" * 1000)


def test_comparing_never_raises_and_decoding_has_a_budget(problems):
    """Issue 21: an exception while comparing is a FAIL (2**4000 against a float overflows);
    past its CPU deadline a result is not decoded further (ERROR, charged to the candidate);
    keys of nested sets are computed once per element (stored on each Bag)."""
    import time

    from coral.judge.sandbox import _verdict
    sqrt = select(problems, ["sqrt"])[0]
    raw = {"status": "RAN", "seconds": 0.01, "out": str(2 ** 4000), "detail": ""}
    assert not outputs_match(2 ** 4000, 1.5)
    assert _verdict(0, raw, sqrt, time.thread_time() + 10).status.value == "FAIL"
    big = {**raw, "out": codec.dumps(list(range(5000)))}
    late = _verdict(0, big, sqrt, time.thread_time() - 1)
    assert late.status.value == "ERROR" and "too costly" in late.detail
    with pytest.raises(codec.DecodeBudgetExceeded):
        codec.loads_result(big["out"], time.thread_time() - 1)
    nested = (1, 2)
    for i in range(50):
        nested = frozenset([nested, i])
    got = codec.loads_result(codec.dumps(nested))
    assert outputs_match(got, nested) and got.keys == codec.canonical(nested).keys
    assert type(got) is codec.Bag and codec.order_key(got) == got.key
