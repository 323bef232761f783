"""Hostile candidates: each must end as a failed candidate within its limit, host unharmed."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from coral.config import SandboxConfig
from coral.messages import Candidate, CandidateStatus
from coral.judge.quixbugs import load_problems, select
from coral.judge.sandbox import Judge

CFG = SandboxConfig(isolation="strict", time_floor_s=0.3, time_factor=10.0, candidate_timeout_s=3.0, memory_mb=256,
                    max_output_bytes=4096)
SLACK_S = 2.0


@pytest.fixture(scope="module")
def host(tmp_path_factory, quixbugs_dir):
    """A judge for gcd plus sentinel files outside the sandbox that must survive."""
    base = tmp_path_factory.mktemp("host")
    sentinel = base / "sentinel.txt"
    sentinel.write_text("untouched")
    (base / "dir").mkdir()
    (base / "dir" / "keep.txt").write_text("keep")
    judge = Judge(select(load_problems(quixbugs_dir), ["gcd"]), CFG,
                  dataset_dir=str(quixbugs_dir))
    judge.calibrate()
    yield judge, base, sentinel, quixbugs_dir
    judge.close()


def _hostile(base: Path, sentinel: Path, data: Path) -> dict[str, str]:
    """name -> candidate source; {S}, {D}, {Q} are the sentinel, a dir, the dataset."""
    S, D, Q = str(sentinel), str(base / "dir"), str(data / "json_testcases" / "gcd.json")
    body = "def gcd(a, b):\n"
    return {
        "infinite_loop": body + "    while True:\n        pass\n",
        "sleep_past_limit": "import time\n" + body + "    time.sleep(60)\n",
        "ignore_sigterm": "import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                          + body + "    while True:\n        pass\n",
        "fork_bomb": "import os\n" + body + "    while True:\n        os.fork()\n",
        "memory_bomb": body + "    x = []\n    while True:\n        x.append(bytearray(10**7))\n",
        "recursion_bomb": "import sys\nsys.setrecursionlimit(10**7)\n" + body
                          + "    return gcd(a + 1, b)\n",
        "huge_output": body + "    for _ in range(10**4):\n        print('x' * 10**4)\n"
                       "    return -1\n",
        "fd_output": "import os\n" + body + "    while True:\n        os.write(1, b'y' * 10**6)\n",
        "os_system": "import os\n" + body + f"    os.system('rm -f {S}')\n    return 1\n",
        "subprocess": "import subprocess\n" + body
                      + f"    subprocess.run(['rm', '-f', '{S}'])\n    return 1\n",
        "posixsubprocess": "import _posixsubprocess\n" + body + "    return 1\n",
        "write_outside": body + f"    open('{S}', 'w').write('owned')\n    return 1\n",
        "append_outside_os_open": "import os\n" + body
                                  + f"    os.open('{S}', os.O_WRONLY | os.O_TRUNC)\n    return 1\n",
        "delete_file": "import os\n" + body + f"    os.remove('{S}')\n    return 1\n",
        "rmtree": "import shutil\n" + body + f"    shutil.rmtree('{D}')\n    return 1\n",
        "rename_out": "import os\n" + body + f"    os.rename('{S}', 'stolen')\n    return 1\n",
        "socket": "import socket\n" + body
                  + "    socket.create_connection(('1.1.1.1', 53), timeout=1)\n    return 1\n",
        "socket_preloaded": body + "    import sys\n    s = sys.modules.get('socket') or "
                                   "sys.modules.get('_socket')\n    s.socket()\n    return 1\n",
        "sys_exit_module": "import sys\nsys.exit(0)\n" + body + "    return 1\n",
        "os_exit_in_call": "import os\n" + body + "    os._exit(0)\n",
        "kill_parent": "import os, signal\n" + body
                       + "    os.kill(os.getppid(), signal.SIGKILL)\n    return 1\n",
        "kill_group": "import os, signal\n" + body + "    os.killpg(0, signal.SIGKILL)\n",
        "read_test_data": body + f"    import json\n    rows = [json.loads(l) for l in open('{Q}')]\n"
                          "    return {tuple(r[0]): r[1] for r in rows}[(a, b)]\n",
        "read_parent_memory": "import os\n" + body
                              + "    return len(open(f'/proc/{os.getppid()}/environ').read())\n",
        "ctypes": "import ctypes\n" + body + "    return ctypes.CDLL(None).fork()\n",
        "patch_builtins": "import builtins\nbuiltins.isinstance = lambda *a: True\n"
                          "builtins.len = lambda x: 0\n" + body + "    return -5\n",
        "patch_comparison": "class Eq:\n    def __eq__(self, o):\n        return True\n"
                            + body + "    return Eq()\n",
        "patch_codec": "import sys\nc = sys.modules['coral.judge.codec']\n"
                       "c.dumps = lambda v, *a: '{\"s\": [[1]]}'\n" + body + "    return 1\n",
        "forge_protocol": "import os\n" + body
                          + "    os.write(3, b'{\"k\":\"r\",\"i\":0,\"out\":\"1\"}\\n' * 50)\n"
                          "    return -3\n",
        "raise_rlimit": "import resource\n" + body
                        + "    resource.setrlimit(resource.RLIMIT_AS, (-1, -1))\n    return 1\n",
        "huge_result": body + "    return list(range(10**7))\n",
    }


def _namespaces(judge) -> set[str]:
    """PID namespaces of the judge's live fork servers (every candidate lives in one)."""
    roots = {s.proc.pid for s in judge._all_servers}
    found = set()
    for pid in _descendants(roots):
        try:
            ns = os.readlink(f"/proc/{pid}/ns/pid")
        except OSError:
            continue
        if ns != os.readlink("/proc/self/ns/pid"):
            found.add(ns)
    return found


def _descendants(roots: set[int]) -> set[int]:
    """`roots` and every process below them (by parent pid)."""
    parent = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                parent[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    found, grew = set(roots), True
    while grew:
        new = {p for p, pp in parent.items() if pp in found and p not in found}
        found |= new
        grew = bool(new)
    return found


def _in_namespaces(namespaces: set[str]) -> list[int]:
    """Host processes still inside any of `namespaces` (leftovers after the servers died)."""
    left = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.readlink(f"/proc/{entry}/ns/pid") in namespaces:
                    left.append(int(entry))
            except OSError:
                continue
    return left


@pytest.fixture(scope="module")
def verdicts(host):
    judge, base, sentinel, data = host
    out = {}
    for name, code in _hostile(base, sentinel, data).items():
        t0 = time.monotonic()
        out[name] = (judge.judge(Candidate(name, "gcd", code)), time.monotonic() - t0)
    return out


def test_at_least_fifteen_hostile_candidates(host):
    judge, base, sentinel, data = host
    assert len(_hostile(base, sentinel, data)) >= 15


@pytest.mark.parametrize("name", sorted(_hostile(Path("/b"), Path("/s"), Path("/q"))))
def test_hostile_candidate_fails_within_limit(verdicts, name):
    outcome, wall = verdicts[name]
    assert not (outcome.status is CandidateStatus.OK and outcome.passed == outcome.total), \
        (name, outcome)
    assert wall <= CFG.candidate_timeout_s + SLACK_S, (name, wall)


def test_specific_defences(verdicts):
    assert verdicts["read_test_data"][0].passed == 0
    assert "read outside the sandbox" in verdicts["read_test_data"][0].tests[0].detail
    assert verdicts["sys_exit_module"][0].status is CandidateStatus.CRASH
    assert "fork" in verdicts["fork_bomb"][0].tests[0].detail
    assert verdicts["infinite_loop"][0].tests[0].status.value == "TIMEOUT"
    assert verdicts["ignore_sigterm"][0].tests[0].status.value == "TIMEOUT"
    assert verdicts["posixsubprocess"][0].status is CandidateStatus.CRASH


def test_host_unharmed(verdicts, host):
    judge, base, sentinel, data = host
    assert sentinel.read_text() == "untouched"
    assert (base / "dir" / "keep.txt").read_text() == "keep"
    assert (data / "json_testcases" / "gcd.json").exists()
    assert not (Path.cwd() / "stolen").exists()
    for server in judge._all_servers:
        assert server.alive  # the server survived every candidate
    ok = judge.judge(Candidate("ref", "gcd", judge.problem("gcd").reference_source))
    assert ok.passed == ok.total  # and still judges correctly
