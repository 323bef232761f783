"""Every command of README.md's "Command line" section works in a fresh copy of the checkout.

A newcomer clones, runs `make run`, then types the README's commands. Here: the checkout's
files (what git tracks or would add) are copied to a new folder with QuixBugs beside it at
../shared/quixbugs (the layout CI has; `coral data pull` prepares another place), and each
command runs there as `python -m coral ...` with no CORAL_* variable set (in particular no
CORAL_QUIXBUGS; only the suite's CORAL_SANDBOX_ISOLATION=strict, which can only refuse more,
and its private CORAL_CACHE stay, so the suite writes nothing into the user's ~/.cache/coral).
Each must exit 0. Commands that take a config run on configs/smoke.yaml (the tiny
model) instead of the full one. The cluster commands cannot run without a cluster: `coral
submit` shows its --help and `coral modal run` its --dry-run (the modal command it would run).

`COMMANDS` maps each README line to what runs it; a README line without an entry fails the
test, so the section and this test change together.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from coral.config.judge import QUIXBUGS_SEARCH_ORDER

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted(p.name for p in (REPO / "configs").glob("*.yaml"))
DATA = "{data}"   # replaced by what `coral data path` prints in the copy
GCD_FIXED = f"{DATA}/correct_python_programs/gcd.py"

# README command (the text before its description) -> the argv lists that run it here.
COMMANDS = {
    "coral config check configs/*.yaml": [["config", "check", *(f"configs/{c}" for c in CONFIGS)]],
    "coral config check CONFIG --plan [--json] [--cluster FILE]": [
        ["config", "check", "configs/cluster-codellama.yaml", "--plan", "--json"],
        ["config", "check", "configs/cluster-codellama.yaml", "--plan", "--cluster",
         "cluster/ray-aws.yaml"]],
    "coral config show --doc": [["config", "show", "--doc"]],
    "coral data path | pull [--from PATH]": [["data", "path"], ["data", "pull"]],
    "coral model pull": [["model", "pull"]],
    "coral run CONFIG [--set k=v] [--no-resume]": [["run", "configs/smoke.yaml"]],
    "coral status RUN_DIR": [["status", "runs/smoke"]],
    "coral cache ls | gc [--max-gb N] [--older-than DAYS] [--dry-run]": [
        ["cache", "ls"], ["cache", "gc", "--older-than", "365", "--dry-run"]],
    "coral report RUN_DIR": [["report", "runs/smoke"]],
    "coral compare CONFIG --strategies nsga2,random --replicates R [--json]": [
        ["compare", "configs/smoke.yaml", "--strategies", "nsga2,random", "--replicates", "1",
         "--set", "search.generations=1", "--json"]],
    "coral judge [--quixbugs PATH] --json": [["judge", "--json"]],
    "coral judge FILE.py ... --problem NAME": [
        ["judge", GCD_FIXED, "--problem", "gcd", "--json"],
        ["judge", GCD_FIXED, f"{DATA}/python_programs/gcd.py", "--problem", "gcd", "--json"]],
    "coral submit CONFIG --address http://HEAD:8265": [["submit", "--help"]],
    "coral submit CONFIG --compare [--replicates R]": [["submit", "--help"]],
    "coral modal run CONFIG": [["modal", "run", "configs/smoke.yaml", "--dry-run"]],
}


def readme_commands() -> list[str]:
    """The commands of README.md's command-line block, without their descriptions."""
    text = (REPO / "README.md").read_text()
    block = text.split("## Command line", 1)[1].split("```text", 1)[1].split("```", 1)[0]
    return [re.split(r"\s{2,}", line.strip())[0] for line in block.splitlines()
            if line.startswith("coral ")]


def test_every_readme_command_has_a_way_to_run_it():
    assert sorted(readme_commands()) == sorted(COMMANDS)


@pytest.fixture(scope="module")
def fresh_copy(tmp_path_factory, quixbugs_dir):
    """The checkout's files in a new folder, QuixBugs at ../shared/quixbugs beside it."""
    work = tmp_path_factory.mktemp("newcomer")
    copy = work / "coral"
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           cwd=REPO, check=True, capture_output=True).stdout.split(b"\0")
    for name in filter(None, (f.decode() for f in files)):
        if (REPO / name).is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, copy / name)
    (work / "shared").mkdir()
    (work / "shared" / "quixbugs").symlink_to(quixbugs_dir)
    return copy


def _no_coral_env() -> dict:
    """This process's environment without any CORAL_* variable but the sandbox's rule and the
    suite's private cache (tests/conftest.py; it holds no QuixBugs copy)."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith("CORAL_") or k in ("CORAL_SANDBOX_ISOLATION", "CORAL_CACHE")}


def _coral(copy: Path, args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "coral", *args], cwd=copy, env=_no_coral_env(),
                          capture_output=True, text=True, timeout=600)


def test_readme_commands_in_a_fresh_copy_exit_0(fresh_copy):
    # the copy's own code runs, not the checkout this test lives in
    where = subprocess.run([sys.executable, "-c", "import coral; print(coral.__file__)"],
                           cwd=fresh_copy, env=_no_coral_env(), capture_output=True, text=True)
    assert where.stdout.strip() == str(fresh_copy / "coral" / "__init__.py")
    # found without a QuixBugs variable: the suite's cache holds no `coral data pull` copy, so
    # the sibling beside the copy
    expected = fresh_copy.parent / "shared" / "quixbugs"
    data = _coral(fresh_copy, ["data", "path"]).stdout.strip()
    assert data == str(expected.resolve())
    failed, outputs = [], {}
    for readme, runs in COMMANDS.items():
        for args in runs:
            args = [a.replace(DATA, data) for a in args]
            t0 = time.monotonic()
            proc = _coral(fresh_copy, args)
            print(f"{time.monotonic() - t0:6.1f} s  coral {' '.join(args)}")
            outputs[" ".join(args)] = proc.stdout
            if proc.returncode != 0:
                failed.append(f"{readme}: coral {' '.join(args)} -> {proc.returncode}\n"
                              f"{proc.stdout[-1500:]}{proc.stderr[-1500:]}")
    assert failed == [], "\n\n".join(failed)
    # what the newcomer was promised: the run's answer, its status, one fixed reference
    assert "report: " in outputs["run configs/smoke.yaml"]
    assert "generation" in outputs["status runs/smoke"]
    assert QUIXBUGS_SEARCH_ORDER in " ".join(outputs["config show --doc"].split())
    assert "nothing to prepare" in outputs["data pull"]
    compare = next(out for cmd, out in outputs.items() if cmd.startswith("compare "))
    assert json.loads(compare.splitlines()[-1])["replicates"] == 1   # --json: the last line
    fixed = f"{data}/correct_python_programs/gcd.py"
    judged = json.loads(outputs[f"judge {fixed} --problem gcd --json"].splitlines()[-1])
    assert judged["problem"] == "gcd" and judged["fixed"] is True
    both = outputs[f"judge {fixed} {data}/python_programs/gcd.py --problem gcd --json"]
    assert [json.loads(line)["fixed"] for line in both.splitlines()[-2:]] == [True, False]
