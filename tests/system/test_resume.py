"""Kill test: a driver SIGKILLed in the middle of a generation and resumed ends exactly like an
uninterrupted run with the same seed (population, every objective of every genome)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from cluster.driver import run
from coral import config as cfgmod
from coral.run.rundir import RunDir

from tests.conftest import REPO

OVERRIDES = ["dataset.problems=[gcd, bitcount, flatten, get_factors]",
             "dataset.held_out_fraction=0.25", "search.population_size=4",
             "search.generations=3", "run.held_out_eval=false", "search.genes.steps=[2]",
             "training.examples=8", "knobs.max_new_tokens=12",
             # every genome trains and samples n answers: the counts below
             "search.seed_population=false", "knobs.greedy_fraction=0", "search.evaluation=fixed"]


def _overrides(tmp_path, quixbugs_dir, name):
    return [f"dataset.quixbugs={quixbugs_dir}", f"run.runs_dir={tmp_path}/runs",
            f"storage.adapters={tmp_path}/adapters", f"run.name={name}", *OVERRIDES]


def _driver(tmp_path, quixbugs_dir, name) -> subprocess.Popen:
    """The driver in its own process (in-process pools: the kill takes everything down)."""
    cmd = [sys.executable, "-m", "cluster.driver", "configs/smoke.yaml", "--in-process",
           "--quiet"]
    for item in _overrides(tmp_path, quixbugs_dir, name):
        cmd += ["--set", item]
    return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=dict(os.environ, PYTHONPATH=str(REPO)))


def _final(rd: RunDir) -> tuple:
    """What must match: survivors with vectors, and every genome's scores and fixes."""
    ck = rd.load_checkpoint()
    pop = [(p["genome"]["id"], p["scores"]) for p in ck["evolution"]["population"]]
    genomes = {g: (r["scores"], r["fixed"], r["key"]) for g, r in ck["genomes"].items()}
    return ck["generation"], pop, genomes, ck["evolution"]["rng"]


def test_sigkill_mid_generation_then_resume_matches_uninterrupted(tmp_path, quixbugs_dir):
    ref_cfg = cfgmod.load("configs/smoke.yaml", _overrides(tmp_path, quixbugs_dir, "ref"))
    ref = RunDir(run(ref_cfg, resume=False, quiet=True, in_process=True, report=False))

    proc = _driver(tmp_path, quixbugs_dir, "killed")
    rd = RunDir(tmp_path / "runs" / "killed")
    deadline = time.monotonic() + 300
    judged_at_kill = None
    while time.monotonic() < deadline and proc.poll() is None:
        events = rd.events()
        gen1 = [e for e in events if e["event"] == "candidate_judged" and e["generation"] == 1]
        if gen1:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            judged_at_kill = len(gen1)
            break
        time.sleep(0.02)
    assert judged_at_kill is not None, f"driver ended before the kill: {proc.stderr.read()!r}"
    proc.stderr.close()
    events = rd.events()
    summaries = [e["generation"] for e in events if e["event"] == "generation_summary"]
    assert summaries == [0], "the kill must land inside generation 1"
    assert rd.load_checkpoint()["generation"] == 1

    resumed = _driver(tmp_path, quixbugs_dir, "killed")
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err.decode()[-2000:]

    assert _final(rd) == _final(ref)
    events = rd.events()
    assert [e["event"] for e in events].count("run_started") == 2
    judged = [(e["phase"], e["generation"], e["genome_id"], e["problem"], e["sample"])
              for e in events if e["event"] == "candidate_judged"]
    # nothing lost, nothing twice: 2 samples of search (3 x 4 x 3) and final (3 x 3) answers
    assert len(judged) == len(set(judged)) == (3 * 4 * 3 + 3 * 3) * 2
    for line in rd.events_path.read_text().splitlines():    # still strict JSONL
        json.loads(line)
    assert json.loads((rd.path / "pareto.json").read_text())["population"] == \
        json.loads((ref.path / "pareto.json").read_text())["population"]
