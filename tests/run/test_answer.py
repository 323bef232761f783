"""The final answer of a run, read back from its run directory (and a random-baseline sibling)."""

from __future__ import annotations

import json

import yaml

from coral import config as cfgmod
from coral.run.answer import final_answer
from coral.run.rundir import RunDir


def _run_dir(path, strategy: str, fixed: list[str], held_fixed: list[str]) -> RunDir:
    """A finished run's files as the engine writes them (only what the answer reads)."""
    rd = RunDir(path).create()
    cfg = cfgmod.from_dict({"search": {"strategy": strategy}})
    (rd.path / "config.yaml").write_text(yaml.safe_dump(cfgmod.to_dict(cfg), sort_keys=False))
    events = [{"event": "run_started", "time": 1.0, "train_problems": ["gcd", "sieve", "hanoi"]},
              {"event": "run_ended", "time": 9.0}]
    (rd.path / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    rd.write_json("best.json", {"id": "g1", "generation": 1, "display": 0.667, "fixed": fixed})
    rd.write_json("heldout.json", {
        "problems": ["bitcount", "flatten"],
        "genomes": [{"id": "g1", "display": 0.5, "fixed": held_fixed,
                     "scores": {"fixed": len(held_fixed) / 2}}],
        "untuned_greedy": {"id": "untuned-greedy", "fixed": ["flatten"],
                           "scores": {"fixed": 0.5}},
        "adapter_gain": {"id": "g1", "has_adapter": True, "with_adapter": len(held_fixed) / 2,
                         "without_adapter": 0.0, "gain": len(held_fixed) / 2,
                         "fixed_with": len(held_fixed), "fixed_without": 0}})
    return rd


def test_answer_names_fixes_held_out_baseline_and_report(tmp_path):
    rd = _run_dir(tmp_path / "exp", "nsga2", ["gcd", "sieve"], ["bitcount"])
    text = final_answer(rd.path)
    assert "run      " in text  # the coral status summary comes first
    assert "fixed 2 of 3 train problems: gcd, sieve" in text
    assert "held-out: fixed 1 of 2" in text and ": bitcount" in text
    # the pick's held-out count next to the untuned greedy model's on the same problems
    assert "untuned model (no adapter, greedy decoding), same held-out problems: fixed 1 of 2: " \
           "flatten" in text
    assert "adapter gain: held-out pass@k 0.500 with its adapter, 0.000 without" in text
    assert "--set run.name=exp-random" in text        # how to get a baseline
    _run_dir(tmp_path / "exp-random", "random", ["gcd"], [])
    (rd.path / "report.md").write_text("# report\n")
    text = final_answer(rd.path)
    assert "baseline exp-random (random search): best fixed 1 train problems" in text
    assert "held-out fixed 0" in text
    assert text.splitlines()[-1] == f"report: {rd.path / 'report.md'}"


def test_answer_of_a_run_without_results_says_so(tmp_path):
    rd = RunDir(tmp_path / "empty").create()
    (rd.path / "events.jsonl").write_text(json.dumps({"event": "run_started", "time": 1.0}) + "\n")
    assert "best genome: none yet" in final_answer(rd.path)
