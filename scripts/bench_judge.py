"""Benchmark of the judge: isolated vs in-process throughput, and the full 80-program run.

(a) trivially passing candidates (the gcd reference fix) judged per second by the sandbox
(2 fork servers) with the isolation `--isolation` picks (`isolation` in the JSON: kernel or
guard), with the in-process guard alone when that was the kernel boundary, and by an UNSAFE
in-process baseline (exec + call + compare in this process, what the sandbox avoids), side by
side in this run, with the load average at the end; (b) wall seconds of judging all 40
reference fixes and 40 buggy programs (buggy infinite loops cost at most their time limits;
the buggy programs are run once, by calibration, and then judged UNCHANGED without running).
Prints JSON lines; the last line is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from coral.judge import cgroup, codec  # noqa: E402
from coral.config import SandboxConfig  # noqa: E402
from coral.messages import Candidate  # noqa: E402
from coral.judge.quixbugs import (  # noqa: E402
    benchmark_candidates, load_problems, outputs_match, resolve_path, select)
from coral.judge.sandbox import Judge  # noqa: E402


def unsafe_in_process(problem, code: str) -> bool:
    """UNSAFE baseline: exec the candidate here and compare (never do this with real candidates)."""
    ns: dict = {}
    exec(compile(code, "<bench>", "exec"), ns)  # noqa: S102 - trusted reference fix only
    fn = ns[problem.function]
    return all(outputs_match(fn(*codec.loads(t.inputs)), t.expected, t.abs_tol)
               for t in problem.tests)


def throughput(problem, isolation: str, n: int, workers: int) -> tuple[float, str]:
    """(candidates per second, isolation used) judging the reference fix n times."""
    cand = Candidate("bench", problem.name, problem.reference_source)
    with Judge([problem], SandboxConfig(isolation=isolation), workers=workers) as judge:
        judge.judge_many([cand] * 8)  # start servers, calibrate
        t0 = time.perf_counter()
        outs = judge.judge_many([cand] * n)
        seconds = time.perf_counter() - t0
    assert all(o.passed == o.total for o in outs)
    return n / seconds, judge.isolation.kind


def full_run(problems, root: Path, isolation: str, workers: int) -> dict:
    """Judge all 40 reference fixes and 40 buggy programs: wall time and the self-check."""
    with Judge(problems, SandboxConfig(isolation=isolation), dataset_dir=str(root),
               workers=workers) as judge:
        t0 = time.perf_counter()
        judge.calibrate()
        outs = judge.judge_many(benchmark_candidates(problems))
        full_s = time.perf_counter() - t0
    fixed = [o.fixed for o in outs]
    return {"full_benchmark_seconds": round(full_s, 2), "programs": len(problems),
            "reference_pass": sum(fixed[:len(problems)]),
            "buggy_fail": sum(not f for f in fixed[len(problems):]),
            # the buggy programs handed back unchanged are not run (UNCHANGED): calibration
            # runs each once, for its baseline, and that time is in full_benchmark_seconds
            "buggy_unchanged": sum(o.status.value == "UNCHANGED" for o in outs[len(problems):])}


def main() -> int:
    """Run the measurements and print JSON."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--quixbugs", help="QuixBugs checkout (default: found as coral finds it)")
    ap.add_argument("--n", type=int, default=1000, help="candidates for the throughput test")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--isolation", default="auto", choices=("auto", "strict", "guard"),
                    help="sandbox.isolation (the JSON says which one ran)")
    args = ap.parse_args()
    root = resolve_path(args.quixbugs)
    problems = load_problems(root)
    gcd = select(problems, ["gcd"])[0]
    load_before = round(os.getloadavg()[0], 2)
    rate, isolation = throughput(gcd, args.isolation, args.n, args.workers)
    a = {"isolation": isolation, "sandbox_candidates_per_second": round(rate, 1),
         "pids_cgroup": isolation == "kernel" and cgroup.pids_parent() is not None}
    if isolation == "kernel":  # the in-process guard alone, side by side in this run
        guard_rate, _ = throughput(gcd, "guard", args.n, args.workers)
        a.update(guard_candidates_per_second=round(guard_rate, 1),
                 guard_over_kernel=round(guard_rate / rate, 2))
    t0 = time.perf_counter()
    assert all(unsafe_in_process(gcd, gcd.reference_source) for _ in range(args.n))
    inproc = args.n / (time.perf_counter() - t0)
    a.update(in_process_candidates_per_second=round(inproc, 1),
             in_process_over_sandbox=round(inproc / rate, 1), workers=args.workers, n=args.n,
             load_average_before=load_before, load_average=round(os.getloadavg()[0], 2))
    print(json.dumps(a), flush=True)
    b = full_run(problems, root, args.isolation, args.workers)
    print(json.dumps(b), flush=True)
    print(json.dumps({**a, **b}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
