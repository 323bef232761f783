"""Run summary, plots and report.md read back from a small hand-written run directory
(test_engine covers the same commands on a real run)."""

from __future__ import annotations

import json

from coral import config as cfgmod
from coral.run.report import format_summary, run_summary, write_report
from coral.run.rundir import RunDir

SCORES = {"bugfix": 1.0, "style": 0.9, "security": 1.0, "runtime": 0.5, "syntax": 1.0,
          "fixed": 1.0}
FIX = "def gcd(a, b):\n    if b == 0:\n        return a\n    else:\n        return gcd(b, a % b)\n"


def fake_run(root, name, quixbugs_dir, strategy="nsga2") -> RunDir:
    """A finished one-generation run directory with one genome that fixed gcd."""
    rd = RunDir(root / name).create()
    rd.write_config(cfgmod.load("configs/smoke.yaml", [f"dataset.quixbugs={quixbugs_dir}",
                                                       f"search.strategy={strategy}"]))
    log = rd.open_events()
    log.write("run_started", generation=0)
    log.write("adapter_ready", generation=0, phase="search", key="k1", outcome="trained",
              seconds=2.0)
    log.write("adapter_ready", generation=0, phase="search", key="k1", outcome="hit",
              seconds=0.0)
    log.write("genome_generated", generation=0, phase="search", genome_id="g1", requests=2,
              tokens=10, seconds=1.0)
    log.write("candidate_judged", generation=0, phase="search", genome_id="g1", problem="gcd",
              status="OK", passed=3, total=3, scores=SCORES, seconds=0.1, code=FIX)
    log.write("candidate_judged", generation=0, phase="search", genome_id="g1",
              problem="hanoi", status="SYNTAX_ERROR", passed=0, total=0,
              scores=dict(SCORES, bugfix=0.0, fixed=0.0), seconds=0.0, code="")
    log.write("run_ended", seconds=5.0, wait_seconds=4.9, driver_seconds=0.1)
    log.close()
    rec = {"generation": 0, "genome": {"id": "g1", "heavy": {"r": 2}}, "key": "k1" * 8,
           "knobs": {"temperature": 0.5}, "scores": dict(SCORES, fixed=0.5), "display": 0.5,
           "fixed": ["gcd"]}
    hist = {"generation": 0, "seconds": 5.0, "genomes": 1, "best_display": 0.5,
            "median_display": 0.5, "best_genome": "g1", "best_scores": rec["scores"],
            "best_fixed": ["gcd"], "unique_adapters": 1, "cache_hit_rate": 0.5}
    rd.save_checkpoint({"generation": 1, "genomes": {"g1": rec}, "history": [hist]})
    rd.write_json("pareto.json", {"population": [dict(rec, id="g1", front=True)]})
    rd.write_json("best.json", dict(rec, id="g1"))
    return rd


def test_summary_counts_cache_failures_and_stages(tmp_path, quixbugs_dir):
    rd = fake_run(tmp_path, "r", quixbugs_dir)
    s = run_summary(rd.path)
    assert s["state"] == "finished" and s["generation"] == 1
    assert s["cache"] == {"lookups": 2, "hits": 1, "trained": 1, "joined": 0, "hit_rate": 0.5,
                          "duplicate_trainings": 0}
    assert s["failures"] == {"SYNTAX_ERROR": 1}
    assert s["stages"]["judge"]["tasks"] == 2 and s["stages"]["generate"]["tasks"] == 2
    assert s["best"]["fixed"] == ["gcd"]
    text = format_summary(s)
    assert "hit rate 50%" in text and "SYNTAX_ERROR 1" in text
    json.dumps(s)  # --json must serialise


def test_report_diffs_the_fix_and_compares_with_a_random_sibling(tmp_path, quixbugs_dir):
    rd = fake_run(tmp_path, "exp", quixbugs_dir)
    fake_run(tmp_path, "exp-random", quixbugs_dir, strategy="random")
    md = write_report(rd.path).read_text()
    assert "#### gcd" in md and "--- buggy/gcd.py" in md and "+        return gcd(b, a % b)" in md
    assert "Evolved vs baseline" in md and "| random |" in md
    for png in ("pareto.png", "fitness.png", "cache.png"):
        assert (rd.path / png).stat().st_size > 5000
