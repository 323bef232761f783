"""Run directory: strict JSONL events, atomic checkpoint, config snapshot and relevance check."""

from __future__ import annotations

import json
import os

import pytest

from coral import config as cfgmod
from coral.run.rundir import (EVENTS_FILE, RunDir, atomic_write_json, config_differences,
                          read_events, relevant_fields, run_path)


def test_events_are_strict_jsonl_and_survive_a_cut_line(tmp_path):
    rd = RunDir(tmp_path / "r").create()
    log = rd.open_events()
    log.write("run_started", generation=0)
    log.write("candidate_judged", genome_id="g", problem="gcd", scores={"bugfix": 1.0})
    log.close()
    # A SIGKILL in the middle of a write leaves a partial line without newline.
    with open(rd.events_path, "a") as fh:
        fh.write('{"event": "candidate_jud')
    assert [e["event"] for e in rd.events()] == ["run_started", "candidate_judged"]
    log = rd.open_events()           # reopening drops the partial tail before appending
    log.write("run_ended")
    log.close()
    lines = rd.events_path.read_text().splitlines()
    assert [json.loads(x)["event"] for x in lines] == ["run_started", "candidate_judged",
                                                       "run_ended"]
    assert all("time" in json.loads(x) for x in lines)


def test_read_events_of_missing_file_is_empty(tmp_path):
    assert list(read_events(tmp_path / EVENTS_FILE)) == []


def test_checkpoint_is_replaced_atomically(tmp_path):
    rd = RunDir(tmp_path / "r").create()
    assert rd.load_checkpoint() is None
    rd.save_checkpoint({"generation": 1})
    rd.save_checkpoint({"generation": 2})
    assert rd.load_checkpoint() == {"generation": 2}
    # No temp files are left behind.
    assert sorted(os.listdir(rd.path)) == ["checkpoint.json"]


def test_atomic_write_keeps_old_content_when_serialisation_fails(tmp_path):
    path = tmp_path / "x.json"
    atomic_write_json(path, {"a": 1})
    with pytest.raises(TypeError):
        atomic_write_json(path, {"a": object()})
    assert json.loads(path.read_text()) == {"a": 1}
    assert sorted(os.listdir(tmp_path)) == ["x.json"]


def test_config_snapshot_loads_back_equal(tmp_path):
    cfg = cfgmod.load("configs/smoke.yaml", ["run.seed=7"])
    rd = RunDir(tmp_path / "r").create()
    rd.write_config(cfg)
    assert rd.load_config() == cfg


def test_relevant_fields_ignore_resources_and_generation_count():
    a = cfgmod.load("configs/smoke.yaml")
    b = cfgmod.load("configs/smoke.yaml", ["ray.judge_pool.size=4", "search.generations=9",
                                           "run.runs_dir=/elsewhere", "model.device=cpu"])
    assert config_differences(relevant_fields(a), relevant_fields(b)) == []
    c = cfgmod.load("configs/smoke.yaml", ["search.mutation_rate=0.5", "run.seed=3"])
    diffs = config_differences(relevant_fields(a), relevant_fields(c))
    assert [d.split(":")[0] for d in diffs] == ["run.seed", "search.mutation_rate"]


def test_run_path_is_runs_dir_slash_name():
    cfg = cfgmod.load("configs/smoke.yaml", ["run.runs_dir=/tmp/rr", "run.name=abc"])
    assert str(run_path(cfg)) == "/tmp/rr/abc"
