"""`coral judge`: judge every reference fix and buggy program, or one candidate file.

``coral judge --quixbugs PATH --json`` checks the judge itself on the benchmark: every
reference fix must pass and every buggy program must fail (buggy programs are run once by the
calibration, which counts their passes; judged again they are UNCHANGED and not run). ``coral judge FILE.py --problem
NAME`` judges one candidate and prints a per-test table (``--json``: one JSON line last).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from coral import config as cfgmod


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `judge` command."""
    p = sub.add_parser("judge", help="run the QuixBugs judge on the benchmark or one file")
    p.add_argument("file", nargs="?", help="candidate source file (omit: judge the benchmark)")
    p.add_argument("--problem", help="QuixBugs problem the file answers (with FILE)")
    p.add_argument("--quixbugs", help="QuixBugs checkout (default: config / $CORAL_QUIXBUGS)")
    p.add_argument("--config", help="YAML config for the sandbox limits")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--workers", type=int, default=2, help="parallel sandboxes (benchmark mode)")
    p.add_argument("--json", action="store_true", help="print one JSON line last")
    p.set_defaults(func=_run)


def _load_cfg(args: argparse.Namespace) -> cfgmod.Config:
    """Config from --config (or defaults) with --set overrides."""
    if args.config:
        return cfgmod.load(args.config, args.overrides)
    return cfgmod.from_dict(cfgmod.apply_overrides({}, args.overrides), "<defaults>")


def _run(args: argparse.Namespace) -> int:
    """Dispatch to benchmark mode or single-file mode."""
    from coral.judge import quixbugs
    from coral.judge.sandbox import Judge

    cfg = _load_cfg(args)
    try:
        root = quixbugs.resolve_path(args.quixbugs or cfg.dataset.quixbugs)
    except quixbugs.DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    problems = quixbugs.load_problems(root)
    with Judge(problems, cfg.sandbox, dataset_dir=str(root), workers=args.workers) as judge:
        if args.file:
            return _one(args, judge)
        return _benchmark(args, judge)


def _benchmark(args: argparse.Namespace, judge) -> int:
    """Judge all reference fixes and buggy programs; exit 0 only if the judge is right."""
    from tqdm import tqdm

    from coral.judge.quixbugs import benchmark_candidates

    problems = judge.problems
    t0 = time.perf_counter()
    judge.calibrate()
    cands = benchmark_candidates(problems)
    outcomes = []
    with tqdm(total=len(cands), desc="judging", unit="program", file=sys.stderr,
              disable=None) as bar:
        for i in range(0, len(cands), judge.workers):
            outcomes += judge.judge_many(cands[i:i + judge.workers])
            bar.update(len(cands[i:i + judge.workers]))
    seconds = time.perf_counter() - t0
    ref_pass = buggy_fail = 0
    for cand, out in zip(cands, outcomes):
        passed, total = out.passed, out.total
        if cand.genome_id == "reference":
            ref_pass += out.fixed
        else:  # handed back as is it is UNCHANGED and not run: calibration ran it
            p = judge.problem(cand.problem)
            passed, total = p.buggy_passed, len(p.tests)
            buggy_fail += passed < total
        if not args.json:
            print(f"{cand.genome_id:9s} {cand.problem:28s} {out.status.value:16s} "
                  f"{passed:3d}/{total:<3d} {out.seconds:7.3f}s")
    summary = {"programs": len(problems), "reference_pass": ref_pass, "buggy_fail": buggy_fail,
               "seconds": round(seconds, 3),
               "candidates_per_second": round(len(cands) / seconds, 2) if seconds else 0.0}
    print(json.dumps(summary) if args.json else
          f"{ref_pass}/{len(problems)} reference fixes pass, {buggy_fail}/{len(problems)} "
          f"buggy programs fail, {seconds:.1f}s")
    return 0 if ref_pass == buggy_fail == len(problems) else 1


def _one(args: argparse.Namespace, judge) -> int:
    """Judge one candidate file against one problem; table or JSON."""
    from coral.judge import fitness
    from coral.messages import Candidate

    if not args.problem:
        print("error: --problem NAME is required with FILE", file=sys.stderr)
        return 2
    try:
        problem = judge.problem(args.problem)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    with open(args.file, encoding="utf-8", errors="replace") as fh:
        code = fh.read()
    cand = Candidate("cli", problem.name, code)
    outcome = judge.judge(cand)
    scores = fitness.score(outcome, cand, judge.problem(problem.name))
    fixed = outcome.fixed
    if not args.json:
        print(f"{problem.name}: {outcome.status.value}  {outcome.passed}/{outcome.total} passed"
              + (f"  ({outcome.detail.splitlines()[0]})" if outcome.detail else ""))
        print(f"{'test':>4}  {'status':8}  {'seconds':>8}  detail")
        for t in outcome.tests:
            print(f"{t.index:>4}  {t.status.value:8}  {t.seconds:8.4f}  {t.detail[:80]}")
        print("scores: " + ", ".join(f"{k}={v:.2f}" for k, v in scores.to_dict().items()))
    else:
        print(json.dumps({"problem": problem.name, "status": outcome.status.value,
                          "passed": outcome.passed, "total": outcome.total, "fixed": fixed,
                          "buggy_passed": judge.problem(problem.name).buggy_passed,
                          "scores": scores.to_dict()}))
    return 0
