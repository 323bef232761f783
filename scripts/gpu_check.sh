#!/usr/bin/env bash
# The GPU check of issue 14, as ONE command: scripts/bench_gpu.py, then
# `coral run configs/gpu-check.yaml --in-process`, each under a timeout, all output in $OUT.
#
#   scripts/gpu_check.sh --prepare   # here, once: fills .gpu-check/ (QuixBugs, the SmolLM2
#                                    # tokenizer folder, pyflakes/pycodestyle/pyseccomp)
#   scripts/gpu_check.sh             # on the GPU box, from the repo root (about 5 minutes
#                                    # on an H100; the timeouts cap it at 9.5)
#   scripts/gpu_check.sh --quick     # the same steps on CPU with random:tiny (tests run it)
#
# The GPU box has torch, transformers, peft, accelerate and safetensors but no ray, datasets
# or gguf, and downloads nothing: both steps import none of those (a test checks), and what
# else they need travels in .gpu-check/ (name it in the device tool's `carry`: it is ignored
# by git). With the device tool: command `bash scripts/gpu_check.sh`, carry [".gpu-check"],
# timeout_s 600. Files in $OUT: env.txt, bench.jsonl (one JSON object per measurement, the
# summary last), bench.log, check.json (the run's stage timings and results), check.log,
# report.md.
set -uo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
PREP=${GPU_CHECK_DIR:-$REPO/.gpu-check}
PYTHON=${PYTHON:-python3}
OUT=${OUT:-/tmp/coral-gpu-check-out}
BENCH_TIMEOUT=${BENCH_TIMEOUT:-380}
CHECK_TIMEOUT=${CHECK_TIMEOUT:-190}
MODE=gpu

case "${1:-}" in
  --prepare) MODE=prepare ;;
  --quick) MODE=quick ;;
  "") ;;
  *) echo "usage: $0 [--prepare | --quick]" >&2; exit 2 ;;
esac

prepare() {
  # found the way coral finds it (config, $CORAL_QUIXBUGS, coral data pull's copy, ../shared)
  local quixbugs
  quixbugs=$("$REPO/scripts/find_quixbugs.sh") || return 1
  rm -rf "$PREP" && mkdir -p "$PREP/cache/tokenizers" "$PREP/site"
  cp -r "$quixbugs" "$PREP/quixbugs"
  # The tokenizer folder random:<shape> models read (written once from the embedded GGUF here).
  local tok
  tok=$("$PYTHON" -c 'from coral.model.loading import tokenizer_dir; print(tokenizer_dir())') || return 1
  cp -r "$tok" "$PREP/cache/tokenizers/smollm2"
  # Pure-Python packages the judge imports and the GPU image lacks: pyflakes and pycodestyle
  # (style score), pyseccomp (ctypes over libseccomp.so.2, for the sandbox's kernel boundary;
  # without bubblewrap there, sandbox.isolation auto falls back to the guard and says so).
  "$PYTHON" - "$PREP/site" <<'EOF' || return 1
import shutil, sys
from pathlib import Path
import pycodestyle, pyflakes
site = Path(sys.argv[1])
shutil.copy(pycodestyle.__file__, site / "pycodestyle.py")
shutil.copytree(Path(pyflakes.__file__).parent, site / "pyflakes",
                ignore=shutil.ignore_patterns("__pycache__", "test"))
try:
    import pyseccomp
    shutil.copy(pyseccomp.__file__, site / "pyseccomp.py")
except ImportError:
    print("pyseccomp not installed here: the GPU check will judge with the guard only")
EOF
  du -sh "$PREP"
  echo "prepared $PREP; on the GPU: bash scripts/gpu_check.sh (carry .gpu-check)"
}

if [ "$MODE" = prepare ]; then prepare; exit $?; fi

[ -d "$PREP/quixbugs" ] || { echo "$PREP is missing: run $0 --prepare first (and carry it)" >&2; exit 2; }
mkdir -p "$OUT"
export PYTHONPATH="$PREP/site:$REPO${PYTHONPATH:+:$PYTHONPATH}"
export CORAL_CACHE="$PREP/cache" CORAL_QUIXBUGS="$PREP/quixbugs"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
WORK=$(mktemp -d /tmp/coral-gpu-check.XXXXXX)

{
  date -u; uname -a
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  echo "bwrap: $(command -v bwrap || echo absent)"
  "$PYTHON" -c 'import sys, torch, transformers, peft; print(sys.version.split()[0], "torch", torch.__version__, "transformers", transformers.__version__, "peft", peft.__version__, "cuda", torch.cuda.is_available())'
} >"$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

if [ "$MODE" = quick ]; then
  BENCH_ARGS=(--quick)
  CHECK_ARGS=(--set model.base=random:tiny --set model.device=cpu --set model.dtype=float32
              --set search.genes.steps=[1] --set training.batch_size=2 --set training.max_length=128
              --set training.examples=16 --set knobs.max_new_tokens=8
              --set dataset.problems=[gcd,bitcount,sieve] --set search.population_size=2)
else
  BENCH_ARGS=()
  CHECK_ARGS=()
fi

echo "== bench_gpu.py (timeout ${BENCH_TIMEOUT}s)"
timeout -k 10 "$BENCH_TIMEOUT" "$PYTHON" scripts/bench_gpu.py ${BENCH_ARGS[@]+"${BENCH_ARGS[@]}"} \
  --out "$OUT/bench.jsonl" 2>&1 | tee "$OUT/bench.log"
bench_rc=$?

echo "== coral run configs/gpu-check.yaml --in-process (timeout ${CHECK_TIMEOUT}s)"
start=$(date +%s)
timeout -k 10 "$CHECK_TIMEOUT" "$PYTHON" -m coral run configs/gpu-check.yaml --in-process \
  --no-resume -q --set "run.runs_dir=$WORK/runs" --set "storage.adapters=$WORK/adapters" \
  ${CHECK_ARGS[@]+"${CHECK_ARGS[@]}"} 2>&1 | tee "$OUT/check.log"
check_rc=$?
seconds=$(( $(date +%s) - start ))

# The run's stage timings from its events.jsonl, as one JSON object.
"$PYTHON" - "$WORK/runs/gpu-check" "$check_rc" "$seconds" >"$OUT/check.json" <<'EOF' ||
import collections, json, sys
from pathlib import Path
run, rc, seconds = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
events = [json.loads(line) for line in (run / "events.jsonl").open() if line.strip()]
kinds = collections.defaultdict(list)
for ev in events:
    kinds[ev["event"]].append(ev)
gen = kinds["genome_generated"]
tokens, gen_s = sum(e["tokens"] for e in gen), sum(e["seconds"] for e in gen)
print(json.dumps({
    "measure": "gpu_check_run", "exit_code": rc, "wall_seconds": seconds,
    "run_seconds": (kinds["run_ended"] or [{}])[-1].get("seconds"),
    "adapters": [{k: e[k] for k in ("outcome", "seconds")} for e in kinds["adapter_ready"]],
    "generation_calls": len(gen), "requests": sum(e["requests"] for e in gen),
    "new_tokens": tokens, "generation_seconds": round(gen_s, 2),
    "tokens_per_s": round(tokens / gen_s, 1) if gen_s else None,
    "judged": dict(collections.Counter(e["status"] for e in kinds["candidate_judged"])),
    "generation_summaries": len(kinds["generation_summary"]),
    "heldout_scored": len(kinds["heldout_scored"])}))
EOF
  echo "{\"measure\": \"gpu_check_run\", \"exit_code\": $check_rc, \"error\": \"no events\"}" >"$OUT/check.json"
cp "$WORK/runs/gpu-check/report.md" "$OUT/report.md" 2>/dev/null
cat "$OUT/check.json"
echo "bench rc=$bench_rc check rc=$check_rc; files in $OUT"
rm -rf "$WORK"
[ "$bench_rc" = 0 ] && [ "$check_rc" = 0 ]
