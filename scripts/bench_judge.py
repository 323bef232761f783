"""Benchmark of the judge: isolated vs in-process throughput, and the full 80-program run.

(a) trivially passing candidates (the gcd reference fix) judged per second by the sandbox
(2 fork servers) and by an UNSAFE in-process baseline (exec + call + compare in this process,
what the sandbox avoids), side by side in this run; (b) wall seconds of judging all 40
reference fixes and 40 buggy programs (buggy infinite loops cost at most their time limits).
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

from coral.judge import codec  # noqa: E402
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


def main() -> int:
    """Run both measurements and print JSON."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--quixbugs", default=os.environ.get("CORAL_QUIXBUGS"))
    ap.add_argument("--n", type=int, default=1000, help="candidates for the throughput test")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--isolation", default="auto", choices=("auto", "strict", "guard"),
                    help="sandbox.isolation (the JSON says which one ran)")
    args = ap.parse_args()
    root = resolve_path(args.quixbugs or Path(__file__).resolve().parents[2] / "shared/quixbugs")
    problems = load_problems(root)
    gcd = select(problems, ["gcd"])[0]
    cand = Candidate("bench", "gcd", gcd.reference_source)

    with Judge([gcd], SandboxConfig(isolation=args.isolation), workers=args.workers) as judge:
        isolation = judge.isolation.kind
        judge.judge_many([cand] * 8)  # start servers, calibrate
        t0 = time.perf_counter()
        outs = judge.judge_many([cand] * args.n)
        sandbox_s = time.perf_counter() - t0
    assert all(o.passed == o.total for o in outs)
    t0 = time.perf_counter()
    assert all(unsafe_in_process(gcd, cand.code) for _ in range(args.n))
    inproc_s = time.perf_counter() - t0
    a = {"sandbox_candidates_per_second": round(args.n / sandbox_s, 1),
         "in_process_candidates_per_second": round(args.n / inproc_s, 1),
         "in_process_over_sandbox": round(sandbox_s / inproc_s, 1),
         "workers": args.workers, "n": args.n, "isolation": isolation}
    print(json.dumps(a), flush=True)

    with Judge(problems, SandboxConfig(isolation=args.isolation), dataset_dir=str(root),
               workers=args.workers) as judge:
        t0 = time.perf_counter()
        judge.calibrate()
        cands = benchmark_candidates(problems)
        outs = judge.judge_many(cands)
        full_s = time.perf_counter() - t0
    fixed = [o.fixed for o in outs]
    b = {"full_benchmark_seconds": round(full_s, 2), "programs": len(problems),
         "reference_pass": sum(fixed[:len(problems)]),
         "buggy_fail": sum(not f for f in fixed[len(problems):]),
         "slowest_buggy": sorted(((round(o.seconds, 2), o.problem)
                                  for o in outs[len(problems):]), reverse=True)[:3]}
    print(json.dumps(b), flush=True)
    print(json.dumps({**a, **b}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
