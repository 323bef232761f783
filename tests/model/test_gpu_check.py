"""The GPU check, run on CPU: scripts/gpu_check.sh --quick with ray, datasets and gguf absent.

The GPU box has torch, transformers, peft and safetensors but no ray, datasets or gguf, and
downloads nothing. Here those three are made absent the way a missing package is absent
(`sys.modules[name] = None` in a sitecustomize on PYTHONPATH, so every Python process the
script starts sees them missing: `import` fails and `find_spec` says None), and the model
cache is only the prepared folder. Then the whole check runs: scripts/bench_gpu.py --quick
and `coral run configs/gpu-check.yaml --in-process` on random:tiny. Both must succeed and
write their JSON, so the one command a GPU session runs cannot rot.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ABSENT = ("ray", "datasets", "gguf")
BLOCKER = ("import sys\n"
           f"for _name in {ABSENT!r}:\n"
           "    sys.modules[_name] = None  # what a package that is not installed looks like\n")


def run_script(*args: str, env: dict, timeout: int) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh"), *args], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=timeout)


def test_gpu_check_quick_runs_without_ray_datasets_or_gguf(tmp_path, quixbugs_dir):
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(BLOCKER)
    out, prep = tmp_path / "out", tmp_path / "prep"
    env = dict(os.environ, PYTHON=sys.executable, OUT=str(out), GPU_CHECK_DIR=str(prep),
               CORAL_QUIXBUGS=str(quixbugs_dir))
    # Prepared with gguf present (it writes the tokenizer folder from the embedded GGUF);
    # the check itself then reads models only from the prepared cache (the script sets it).
    prepared = run_script("--prepare", env=env, timeout=300)
    assert prepared.returncode == 0, prepared.stderr[-2000:]
    assert (prep / "cache/tokenizers/smollm2/tokenizer.json").is_file()
    assert (prep / "site/pycodestyle.py").is_file() and (prep / "site/pyflakes").is_dir()

    blocked = dict(env, PYTHONPATH=str(blocker))
    probe = subprocess.run([sys.executable, "-c", "import ray"], env=blocked,
                           capture_output=True, text=True)
    assert probe.returncode != 0 and "ray" in probe.stderr     # the blocker really blocks

    done = run_script("--quick", env=blocked, timeout=900)
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    rows = [json.loads(line) for line in (out / "bench.jsonl").read_text().splitlines()]
    measures = {r["measure"] for r in rows}
    assert {"setup", "train", "generation_production", "generation_mixed",
            "resident_vs_reload", "adapter_swap", "summary"} <= measures
    summary = rows[-1]
    assert summary["measure"] == "summary" and summary["failed"] == []
    for key in ("active_vs_adapter_names", "batched_vs_sequential", "mixed_vs_grouped",
                "tokens_per_s_per_gpu", "resident_vs_reload", "adapter_swap_ms"):
        assert isinstance(summary[key], (int, float)) and summary[key] > 0, key
    assert set(summary["train"]) == {"lora_qv", "lora_all", "dora_all"}
    assert all(t["seconds_per_step"] > 0 for t in summary["train"].values())
    assert "RANDOM WEIGHTS" in (out / "bench.log").read_text()

    check = json.loads((out / "check.json").read_text())
    assert check["exit_code"] == 0
    assert len(check["adapters"]) >= 2 and check["requests"] > 0
    assert sum(check["judged"].values()) == check["requests"]    # every answer was judged
    assert (out / "report.md").is_file() and (out / "env.txt").is_file()


def test_bench_counts_an_out_of_memory_step_as_a_failure(quixbugs_dir):
    """An OOM (injected: the step raises what a too-small card raises) fails the benchmark
    (exit 1, listed in `failed`); the checkpointed retry is its own row saying so, and the
    summary never reports it as the plain figure."""
    env = dict(os.environ, CORAL_QUIXBUGS=str(quixbugs_dir))
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "bench_gpu.py"), "--quick",
                          "--inject-oom", "lora_qv", "--skip", "reload,swap"], cwd=REPO,
                         env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 1, out.stderr[-3000:]
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    summary = rows[-1]
    assert summary["measure"] == "summary" and summary["failed"] == ["train_lora_qv"]
    oom = next(r for r in rows if r["measure"] == "train_lora_qv")
    assert "out of memory" in oom["error"] and oom["gradient_checkpointing"] is False
    retried = [r for r in rows if r["measure"] == "train" and r["variant"] == "lora_qv"]
    assert [r["gradient_checkpointing"] for r in retried] == [True]
    assert "lora_qv" not in summary["train"]
    assert summary["train"]["lora_qv_checkpointed"]["gradient_checkpointing"] is True
