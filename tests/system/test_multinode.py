"""Several Ray nodes, no shared file system for adapters: the smoke run on a real 4-node
cluster on this machine (`ray.cluster_utils.Cluster`), one node removed mid-run.

The scenario runs in its own process (tests/system/multinode_run.py): this session's Ray
cannot be re-initialised for another cluster. About 1.5 min on 2 quiet cores (cluster start
included); select alone with `pytest -m multinode`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.multinode

SCRIPT = Path(__file__).with_name("multinode_run.py")


@pytest.fixture(scope="module")
def result(tmp_path_factory, quixbugs_dir) -> dict:
    """The JSON evidence of one multi-node run (its processes are killed if it hangs)."""
    work = tmp_path_factory.mktemp("multinode")
    proc = subprocess.Popen([sys.executable, str(SCRIPT), str(work), str(quixbugs_dir)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, cwd=SCRIPT.parents[2])
    try:
        out, _ = proc.communicate(timeout=540)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"multi-node run did not finish:\n{out[-6000:]}")
    lines = [x for x in out.splitlines() if x.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, out[-6000:]
    doc = json.loads(lines[-1][len("RESULT "):])
    doc["work"] = str(work)
    return doc


def test_run_finishes_and_no_result_is_lost(result):
    assert result["ended"]
    judged = [tuple(j) for j in result["judged"]]
    assert len(judged) == len(set(judged)) == result["expected_judged"]


def test_no_adapter_is_trained_twice(result):
    keys = result["trained_keys"]
    assert keys and len(keys) == len(set(keys))
    assert result["cache"]["trainings"] == len(keys) == result["trainer"]["trained"]


def test_a_node_that_trained_nothing_generates_with_adapters_trained_elsewhere(result):
    gen, removed = result["generator"], result["removed"]["node"]
    assert removed and removed not in result["alive_nodes"]           # really gone
    # the generation actor was restarted on the spare node: not the trainer's, not the head
    assert gen["node"] not in (removed, result["trainer"]["node"], result["head_node"])
    assert gen["fetched"] >= 1 and gen["local_keys"]
    assert set(gen["local_keys"]) <= set(result["trained_keys"])
    local = Path(gen["local_dir"])
    assert local.is_relative_to(Path(result["work"]) / "local")
    assert not local.is_relative_to(result["store"])


def test_the_cache_persists_on_the_head_only(result):
    assert result["cache_node"] == result["head_node"]
    store = Path(result["store"])
    assert sorted(p.name for p in store.iterdir() if not p.name.startswith(".")) == \
        sorted(result["trained_keys"])
