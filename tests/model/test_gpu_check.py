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
    assert {"setup", "train", "generation", "resident_vs_reload", "adapter_swap",
            "summary"} <= measures
    summary = rows[-1]
    assert summary["measure"] == "summary" and summary["failed"] == []
    for key in ("train_lora_seconds_per_step", "train_dora_seconds_per_step",
                "mixed_batch_vs_sequential", "mixed_vs_grouped", "tokens_per_s_per_gpu",
                "resident_vs_reload", "adapter_swap_ms"):
        assert isinstance(summary[key], (int, float)) and summary[key] > 0, key
    assert "RANDOM WEIGHTS" in (out / "bench.log").read_text()

    check = json.loads((out / "check.json").read_text())
    assert check["exit_code"] == 0
    assert len(check["adapters"]) >= 2 and check["requests"] > 0
    assert sum(check["judged"].values()) == check["requests"]    # every answer was judged
    assert (out / "report.md").is_file() and (out / "env.txt").is_file()
