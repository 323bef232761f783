"""Benchmark a whole run: wall time per stage, driver overhead, pool utilisation, cache use.

Runs the smoke config (or CONFIG) twice on a local Ray with a fresh adapter store: a cold run
(every adapter trained) and a warm run of the same search under another name (every adapter a
cache hit), side by side in one process. Driver overhead is the time the driver spends in its
own code (scheduling, scoring, events, checkpoints) rather than blocked waiting on workers, as
a fraction of the run. Prints JSON lines; the last line is one JSON object with the figures.

    python scripts/bench_run.py [CONFIG] [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from coral import config as cfgmod  # noqa: E402
from coral.run.report import run_summary  # noqa: E402
from coral.run.rundir import read_events  # noqa: E402


def measure(run_dir: Path, seconds: float) -> dict:
    """Figures of one finished run directory."""
    s = run_summary(run_dir)
    events = list(read_events(run_dir))
    ended = [e for e in events if e["event"] == "run_ended"][-1]
    return {
        "run": run_dir.name, "wall_seconds": round(seconds, 2),
        "engine_seconds": ended["seconds"], "driver_seconds": ended["driver_seconds"],
        "wait_seconds": ended["wait_seconds"],
        "driver_overhead_fraction": round(ended["driver_seconds"] / ended["seconds"], 4),
        "stage_seconds": {k: v["busy_seconds"] for k, v in s["stages"].items()},
        "stage_tasks": {k: v["tasks"] for k, v in s["stages"].items()},
        "utilisation": {k: v["utilisation"] for k, v in s["stages"].items()},
        "cache_hit_rate": s["cache"]["hit_rate"], "duplicate_trainings":
            s["cache"]["duplicate_trainings"], "cache": s["cache"],
        "best": s["best"], "failures": s["failures"], "candidates": s["candidates"],
    }


def main() -> int:
    """Run cold and warm, print per-run lines and the final summary object."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("config", nargs="?", default="configs/smoke.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    from cluster.driver import run
    from cluster.local import connect, disconnect

    with tempfile.TemporaryDirectory(prefix="coral-bench-") as tmp:
        base = [f"run.runs_dir={tmp}/runs", f"storage.adapters={tmp}/adapters", *args.overrides]
        cfg = cfgmod.load(args.config, base + ["run.name=cold"])
        t0 = time.perf_counter()
        started = connect(cfg.ray)
        ray_start = time.perf_counter() - t0
        out = {}
        try:
            for name in ("cold", "warm"):
                cfg = cfgmod.load(args.config, base + [f"run.name={name}"])
                t0 = time.perf_counter()
                path = run(cfg, resume=False, quiet=True)
                out[name] = measure(path, time.perf_counter() - t0)
                print(json.dumps(out[name]), flush=True)
        finally:
            disconnect(started)
    cold, warm = out["cold"], out["warm"]
    print(json.dumps({
        "config": args.config, "ray_start_seconds": round(ray_start, 2),
        "driver_overhead_fraction": cold["driver_overhead_fraction"],
        "driver_overhead_fraction_warm": warm["driver_overhead_fraction"],
        "duplicate_trainings": cold["duplicate_trainings"] + warm["duplicate_trainings"],
        "cache_hit_rate": cold["cache_hit_rate"], "cache_hit_rate_warm": warm["cache_hit_rate"],
        "stage_seconds": cold["stage_seconds"], "stage_seconds_warm": warm["stage_seconds"],
        "utilisation": cold["utilisation"], "wall_seconds": cold["wall_seconds"],
        "wall_seconds_warm": warm["wall_seconds"],
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
