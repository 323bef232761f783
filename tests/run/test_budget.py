"""Budget accounting from events: samples of the search phase, wall hours over resumes."""

from __future__ import annotations

from coral.config.search import BudgetConfig
from coral.run.budget import exhausted, format_standing, spent, standing


def judged(t, phase="search"):
    return {"event": "candidate_judged", "time": t, "phase": phase}


# Two driver processes: 0..1800 s, killed, resumed at 5000 s and running until 5900 s.
EVENTS = [{"event": "run_started", "time": 0.0}, judged(10), judged(20), judged(30, "heldout"),
          {"event": "generation_summary", "time": 1800.0},
          {"event": "run_started", "time": 5000.0}, judged(5100), judged(5900)]


def test_resume_keeps_counting_and_downtime_is_not_spent():
    used = spent(EVENTS, gpus=2.0)
    assert used.samples == 4                    # held-out samples are not the search's
    assert used.hours == (1800 + 900) / 3600    # not the 3200 s between kill and resume
    assert used.gpu_hours == 2 * used.hours
    assert spent(EVENTS, now=6260.0).hours == (1800 + 1260) / 3600  # a running driver


def test_a_limit_reached_stops_the_run_and_no_limit_never_does():
    used = spent(EVENTS)
    assert exhausted(BudgetConfig(), used) is None
    assert exhausted(BudgetConfig(samples=5), used) is None
    assert "samples 4 of 4" in exhausted(BudgetConfig(samples=4), used)
    assert "hours" in exhausted(BudgetConfig(max_hours=0.5), used)
    assert exhausted(BudgetConfig(gpu_hours=0.1), used) is None  # CPU run: no GPU hours


def test_standing_says_used_and_left():
    doc = standing(BudgetConfig(samples=10, max_hours=1.0), spent(EVENTS))
    assert doc["samples"] == {"used": 4, "limit": 10, "left": 6}
    assert doc["hours"]["left"] == 0.25
    assert doc["gpu_hours"]["limit"] is None
    line = format_standing(doc)
    assert "samples 4/10 (6 left)" in line and "gpu_hours 0.00 (no limit)" in line


def test_standing_of_a_run_directory_reads_its_config_snapshot(tmp_path):
    from coral import config as cfgmod
    from coral.run.budget import standing_of
    from coral.run.rundir import RunDir

    rd = RunDir(tmp_path / "run").create()
    rd.write_config(cfgmod.load("configs/smoke.yaml", ["search.budget.samples=3"]))
    log = rd.open_events()
    for ev in EVENTS:
        log.write(ev["event"], **{k: v for k, v in ev.items() if k not in ("event", "time")})
    log.close()
    doc = standing_of(rd.path)
    assert doc["samples"] == {"used": 4, "limit": 3, "left": 0}
    assert standing_of(tmp_path / "nothing") is None
