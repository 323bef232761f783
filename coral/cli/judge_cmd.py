"""`coral judge`: judge every reference fix and buggy program, or one candidate file.

``coral judge --quixbugs PATH --json`` checks the judge itself on the benchmark: every
reference fix must pass and every buggy program must fail (buggy programs are run once by the
calibration, which counts their passes; judged again they are UNCHANGED and not run).
``coral judge FILE.py [FILE.py ...] --problem NAME`` judges the files in order on one judge
(with ``--workers 1`` all on one fork server, one after another) and prints a per-test table
per file (``--json``: one JSON line per file). What a candidate printed is shown with
unprintable characters (lone surrogates, ...) escaped, never as a crash.
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
    p.add_argument("files", nargs="*", metavar="FILE",
                   help="candidate source files, judged in order (omit: judge the benchmark)")
    p.add_argument("--problem", help="QuixBugs problem the files answer (with FILE)")
    p.add_argument("--quixbugs", help="QuixBugs checkout (default: the config's, else where "
                                      "`coral data path` finds it)")
    p.add_argument("--config", help="YAML config for the sandbox limits")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--workers", type=int, default=2,
                   help="parallel sandboxes (1: every file on one fork server, in order)")
    p.add_argument("--json", action="store_true",
                   help="JSON lines: one per FILE, or one summary line last (benchmark)")
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
        if args.files:
            return _files(args, judge)
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


def _safe(text: str) -> str:
    """`text` as stdout can encode it: lone surrogates and the like escaped."""
    encoding = getattr(sys.stdout, "encoding", None) or "utf-8"
    return text.encode(encoding, "backslashreplace").decode(encoding, "replace")


def _files(args: argparse.Namespace, judge) -> int:
    """Judge each candidate file against one problem, in order; a table or a JSON line each."""
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
    for path in args.files:
        with open(path, encoding="utf-8", errors="replace") as fh:
            cand = Candidate("cli", problem.name, fh.read())
        outcome = judge.judge(cand)
        calibrated = judge.problem(problem.name)
        scores = fitness.score(outcome, cand, calibrated)
        if args.json:
            print(json.dumps({"file": path, "problem": problem.name,
                              "status": outcome.status.value, "passed": outcome.passed,
                              "total": outcome.total, "fixed": outcome.fixed,
                              "buggy_passed": calibrated.buggy_passed,
                              "scores": scores.to_dict(),
                              "tests": [[t.status.value, round(t.seconds, 6), t.detail[:200]]
                                        for t in outcome.tests]}), flush=True)
        else:
            _table(path if len(args.files) > 1 else "", problem.name, outcome, scores)
    return 0


def _table(path: str, name: str, outcome, scores) -> None:
    """The per-test table of one verdict (candidate text escaped: `_safe`)."""
    head = f"{path}: " if path else ""
    print(_safe(f"{head}{name}: {outcome.status.value}  {outcome.passed}/{outcome.total} passed"
                + (f"  ({outcome.detail.splitlines()[0]})" if outcome.detail else "")))
    print(f"{'test':>4}  {'status':8}  {'seconds':>8}  detail")
    for t in outcome.tests:
        print(_safe(f"{t.index:>4}  {t.status.value:8}  {t.seconds:8.4f}  {t.detail[:80]}"))
    print("scores: " + ", ".join(f"{k}={v:.2f}" for k, v in scores.to_dict().items()),
          flush=True)
