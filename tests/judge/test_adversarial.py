"""Hostile candidates: each must end as a failed candidate within its limit, the host unharmed,
and honest candidates judged before and after them must get the same verdicts.

Two sets: the classic attacks (loops, bombs, writes, signals, forged frames), and one or more
fresh candidates per root cause of issue 11, most of which first switch the in-process audit
guard off (root cause 1: its state is Python state the candidate can rebind), so that what
stops them is the kernel boundary: namespaces, the read-only filesystem view, seccomp.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest
from hostcheck import Listener, pid_namespaces, processes_in, python_dirs, snapshot

from coral.config import SandboxConfig
from coral.judge.quixbugs import load_problems, select
from coral.judge.sandbox import Judge
from coral.messages import Candidate, CandidateStatus

CFG = SandboxConfig(isolation="strict", time_floor_s=0.3, time_factor=10.0,
                    candidate_timeout_s=3.0, memory_mb=256, max_output_bytes=4096)
SLACK_S = 2.0
BODY = "def gcd(a, b):\n"
# Root cause 1: the guard's checks read module globals a candidate can rebind (here: every
# path counts as inside the sandbox except under the dataset's deny-list root).
NEUTER = ("import sys, os\n_g = sys.modules['coral.judge.guard']\n"
          "_g._inside = lambda path, roots: 'quixbugs' not in ''.join(roots)\n"
          "_g._DENY_EVENTS = frozenset()\n"
          "_g._DENY_PREFIXES = ('never.',)\n_g._DENY_MODULES = frozenset()\n")
HONEST = {"reference": None, "wrong": BODY + "    return -1\n",
          "half": BODY + "    return a if a < 20 else b\n",
          "slow_loop": BODY + "    while True:\n        pass\n"}


def _classic(S: str, D: str, Q: str) -> dict[str, str]:
    """The attacks of the first red-team pass; {S} sentinel, {D} a dir, {Q} the dataset."""
    return {
        "infinite_loop": BODY + "    while True:\n        pass\n",
        "sleep_past_limit": "import time\n" + BODY + "    time.sleep(60)\n",
        "ignore_sigterm": "import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                          + BODY + "    while True:\n        pass\n",
        "fork_bomb": "import os\n" + BODY + "    while True:\n        os.fork()\n",
        "memory_bomb": BODY + "    x = []\n    while True:\n        x.append(bytearray(10**7))\n",
        "recursion_bomb": "import sys\nsys.setrecursionlimit(10**7)\n" + BODY
                          + "    return gcd(a + 1, b)\n",
        "huge_output": BODY + "    for _ in range(10**4):\n        print('x' * 10**4)\n"
                       "    return -1\n",
        "fd_output": "import os\n" + BODY + "    while True:\n        os.write(1, b'y' * 10**6)\n",
        "os_system": "import os\n" + BODY + f"    os.system('rm -f {S}')\n    return 1\n",
        "subprocess": "import subprocess\n" + BODY
                      + f"    subprocess.run(['rm', '-f', '{S}'])\n    return 1\n",
        "posixsubprocess": "import _posixsubprocess\n" + BODY + "    return 1\n",
        "write_outside": BODY + f"    open('{S}', 'w').write('owned')\n    return 1\n",
        "delete_file": "import os\n" + BODY + f"    os.remove('{S}')\n    return 1\n",
        "rmtree": "import shutil\n" + BODY + f"    shutil.rmtree('{D}')\n    return 1\n",
        "socket": "import socket\n" + BODY
                  + "    socket.create_connection(('1.1.1.1', 53), timeout=1)\n    return 1\n",
        "sys_exit_module": "import sys\nsys.exit(0)\n" + BODY + "    return 1\n",
        "os_exit_in_call": "import os\n" + BODY + "    os._exit(0)\n",
        "kill_parent": "import os, signal\n" + BODY
                       + "    os.kill(os.getppid(), signal.SIGKILL)\n    return 1\n",
        "read_test_data": BODY + "    import json\n"
                          f"    rows = [json.loads(l) for l in open('{Q}')]\n"
                          "    return {tuple(r[0]): r[1] for r in rows}[(a, b)]\n",
        "patch_codec": "import sys\nc = sys.modules['coral.judge.codec']\n"
                       "c.dumps = lambda v, *a: '{\"s\": [[1]]}'\n" + BODY + "    return 1\n",
        "forge_protocol": "import os\n" + BODY
                          + "    os.write(3, b'{\"k\":\"r\",\"i\":0,\"out\":\"1\"}\\n' * 50)\n"
                          "    return -3\n",
        "huge_result": BODY + "    return list(range(10**7))\n",
    }


def _root_causes(base: Path, data: Path, sock: str) -> dict[str, str]:
    """Fresh attacks, one group per root cause of issue 11 (prefix rcN_)."""
    Q = str(data / "json_testcases" / "gcd.json")
    return {
        "rc1_read_answers": NEUTER + BODY + f"    rows = [json.loads(l) for l in open('{Q}')]\n"
                            "    return dict((tuple(r[0]), r[1]) for r in rows)[(a, b)]\n"
                            "import json\n",
        "rc1_judge_memory": NEUTER + BODY + "    f = open(f'/proc/{os.getppid()}/mem', 'rb')\n"
                            "    return len(os.listdir('/proc'))\n",
        "rc2_sitecustomize": NEUTER + "import sysconfig\n" + BODY
                             + "    errs = []\n"
                             "    for d in set(sysconfig.get_paths().values()) | set(sys.path):\n"
                             "        try:\n            fd = os.open(d, os.O_RDONLY)\n"
                             "            os.open('sitecustomize.py', os.O_WRONLY | os.O_CREAT,"
                             " dir_fd=fd)\n        except OSError as e:\n"
                             "            errs.append(str(e))\n"
                             "        try:\n            open(d + '/sitecustomize.py', 'w')\n"
                             "        except OSError as e:\n"
                             "            errs.append(str(e))\n"
                             "    raise OSError(' | '.join(sorted(set(errs))))\n",
        "rc3_pidfd_stop": NEUTER + "import signal\n" + BODY
                          + "    for pid in (1, 2, os.getppid()):\n"
                          "        signal.pidfd_send_signal(os.pidfd_open(pid), signal.SIGSTOP)\n"
                          "    return a\n",
        "rc3_mkfifo": NEUTER + BODY + f"    os.mkfifo('{base}/fifo')\n    return a\n",
        "rc3_mknod_tmp": NEUTER + BODY + "    os.mkfifo('/tmp/fifo')\n    return a\n",
        "rc3_ctypes_preloaded": NEUTER + "libc = sys.modules['coral.judge.candidate']._LIBC\n"
                                "libc.prctl(1, 0, 0, 0, 0)\n" + BODY
                                + "    libc.kill(1, 19)\n    return libc.fork()\n",
        "rc5_ipc_to_next_candidate": NEUTER + "libc = sys.modules['coral.judge.candidate']._LIBC\n"
                                     + BODY + "    return libc.shmget(0x5eed, 4096, 0o1666)\n",
        "rc4_new_session_fork": NEUTER + BODY + "    os.setsid() if os.getsid(0) != os.getpid() "
                                "else None\n    if os.fork() == 0:\n        os.setsid()\n"
                                "        if os.fork() == 0:\n            while True:\n"
                                "                pass\n    return a\n",
        "rc4_unix_socket": NEUTER + "import _socket\n" + BODY
                           + "    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)\n"
                           f"    s.connect('{sock}')\n    return a\n",
        "rc5_hash_collisions": "import os, json\nSENT = []\n" + BODY
                               + "    if not SENT:\n        SENT.append(1)\n"
                               "        out = json.dumps({'s': [k * (2**61 - 1) for k in "
                               "range(80000)]})\n"
                               "        os.write(3, (json.dumps({'k': 'r', 'i': 0, 'out': out})"
                               " + '\\n').encode())\n    return -1\n",
        "rc5_oversized_frame": "import os\n" + BODY + "    os.write(3, b'7' * (9 << 20))\n"
                               "    return a\n",
        "rc5_unhashable_kind": "import os\n" + BODY
                               + "    os.write(3, b'{\"k\": [1], \"i\": 0}\\n')\n    return a\n",
        "rc5_extra_lines": "import os\n" + BODY
                           + "    os.write(3, b'{\"k\":\"end\",\"output\":\"\"}"
                           "\\n{\"id\":\"x\",\"status\":\"OK\"}\\n' * 20)\n    return -1\n",
        "rc5_stdout_garbage": "import os\n" + BODY + "    for fd in range(0, 40):\n"
                              "        try:\n            os.write(fd, b'garbage\\n{]\\n')\n"
                              "        except OSError:\n            pass\n    return -1\n",
    }


@pytest.fixture(scope="module")
def host(tmp_path_factory, quixbugs_dir):
    """A judge for gcd, sentinel files, a UNIX listener, and snapshots of the host to compare."""
    base = tmp_path_factory.mktemp("host")
    (base / "sentinel.txt").write_text("untouched")
    (base / "dir").mkdir()
    (base / "dir" / "keep.txt").write_text("keep")
    listener = Listener()
    before = snapshot(python_dirs())
    judge = Judge(select(load_problems(quixbugs_dir), ["gcd"]), CFG,
                  dataset_dir=str(quixbugs_dir))
    judge.calibrate()
    yield {"judge": judge, "base": base, "data": quixbugs_dir, "listener": listener,
           "python": before}
    judge.close()
    listener.close()


def _hostile(h: dict) -> dict[str, str]:
    base = h["base"]
    return {**_classic(str(base / "sentinel.txt"), str(base / "dir"),
                       str(h["data"] / "json_testcases" / "gcd.json")),
            **_root_causes(base, h["data"], h["listener"].path)}


def _honest(judge: Judge) -> dict:
    """(status, per-test statuses) of each honest candidate."""
    out = {}
    for name, code in HONEST.items():
        v = judge.judge(Candidate(name, "gcd", code or judge.problem("gcd").reference_source))
        out[name] = (v.status, tuple(t.status for t in v.tests))
    return out


@pytest.fixture(scope="module")
def verdicts(host):
    judge = host["judge"]
    host["honest_before"] = _honest(judge)
    out = {}
    for name, code in _hostile(host).items():
        t0 = time.monotonic()
        out[name] = (judge.judge(Candidate(name, "gcd", code)), time.monotonic() - t0)
    host["honest_after"] = _honest(judge)
    return out


def test_every_root_cause_has_a_fresh_candidate():
    names = _root_causes(Path("/b"), Path("/q"), "/s")
    assert {n.split("_")[0] for n in names} == {"rc1", "rc2", "rc3", "rc4", "rc5"}


def _all_names() -> list[str]:
    fake = {"base": Path("/b"), "data": Path("/q"), "listener": type("L", (), {"path": "/s"})}
    return sorted(_hostile(fake))


@pytest.mark.parametrize("name", _all_names())
def test_hostile_candidate_fails_within_limit(verdicts, name):
    outcome, wall = verdicts[name]
    assert not (outcome.status is CandidateStatus.OK and outcome.passed == outcome.total), \
        (name, outcome)
    assert outcome.passed < outcome.total, (name, outcome)
    assert wall <= CFG.candidate_timeout_s + SLACK_S, (name, wall)


def _details(verdict) -> str:
    return verdict.detail + " ".join(t.detail for t in verdict.tests)


def test_the_kernel_boundary_is_what_stopped_them(verdicts):
    """With the guard switched off, the errors come from the kernel: no such file (not in the
    mount namespace), read-only filesystem, EPERM from seccomp."""
    seen = {n: _details(v) for n, (v, _) in verdicts.items()}
    assert "No such file" in seen["rc1_read_answers"]          # dataset not mounted
    assert "No such file" in seen["rc1_judge_memory"]          # no /proc
    assert "Read-only file system" in seen["rc2_sitecustomize"]
    for name in ("rc3_pidfd_stop", "rc3_mkfifo", "rc3_mknod_tmp", "rc4_new_session_fork",
                 "rc4_unix_socket"):
        assert "Operation not permitted" in seen[name], (name, seen[name])  # seccomp
    assert "got -1" in seen["rc3_ctypes_preloaded"]             # libc fork() refused
    assert "got -1" in seen["rc5_ipc_to_next_candidate"]        # no System V shared memory
    assert "result too large" in seen["rc5_oversized_frame"]  # 8 MiB per process, then cut
    assert "read outside the sandbox" in seen["read_test_data"]  # guard intact: guard stops it
    assert verdicts["infinite_loop"][0].tests[0].status.value == "TIMEOUT"
    assert verdicts["sys_exit_module"][0].status is CandidateStatus.CRASH


def test_forged_frames_cost_the_judge_little(verdicts):
    """80k colliding integers: compared in sorted canonical form, not hashed (was 36 s)."""
    outcome, wall = verdicts["rc5_hash_collisions"]
    assert outcome.tests[0].status.value in ("FAIL", "ERROR") and wall < 3.0


def test_honest_verdicts_unchanged(verdicts, host):
    assert host["honest_before"] == host["honest_after"]
    ref = host["honest_before"]["reference"]
    assert ref[0] is CandidateStatus.OK and set(ref[1]) == {ref[1][0]} and \
        ref[1][0].value == "PASS"


def test_host_unharmed(verdicts, host):
    base = host["base"]
    assert (base / "sentinel.txt").read_text() == "untouched"
    assert (base / "dir" / "keep.txt").read_text() == "keep"
    assert not (base / "fifo").exists() and not (Path.cwd() / "stolen").exists()
    assert (host["data"] / "json_testcases" / "gcd.json").exists()
    assert snapshot(python_dirs()) == host["python"]  # nothing written into Python
    assert host["listener"].connections() == 0  # the host's UNIX socket was never reached
    judge = host["judge"]
    namespaces = pid_namespaces(judge)
    assert namespaces  # the servers live in their own PID namespaces
    judge.close()  # nothing may outlive them, in any session
    deadline = time.monotonic() + 5.0
    while processes_in(namespaces) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_in(namespaces) == []


# Scans its own process's memory (pages that a pipe write can copy) for a needle it builds at
# run time, not counting its own copies of the needle.
SCAN = NEUTER + '''import ctypes
libc = sys.modules['coral.judge.candidate']._LIBC
libc.write.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t]
libc.memmem.restype = libc.sbrk.restype = ctypes.c_void_p
libc.memmem.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t]
def count(parts):
    needle = ''.join(parts).encode()
    buf = ctypes.create_string_buffer(needle, len(needle))
    mine = {ctypes.addressof(buf), id(needle) + 32}  # data of the buffer and the bytes object
    r, w = os.pipe()
    found, seen = 0, set()
    for top in (libc.sbrk(0), id(object()), id(count)):
        for page in range((top & ~0xfff) - (24 << 20), (top & ~0xfff) + (24 << 20), 4096):
            if page <= 0 or page in seen or libc.write(w, page, 4096) != 4096:
                continue
            seen.add(page)
            os.read(r, 4096)
            at = page
            while True:
                hit = libc.memmem(at, page + 4096 - at, ctypes.addressof(buf), len(needle))
                if not hit:
                    break
                found += hit not in mine
                at = hit + 1
    return found
def gcd(a, b):
    # YYQXOWN-B: this comment exists only in the source text (the request)
    return [count(['ZZQX', 'MARK', 'ER-A']), count(['YYQX', 'OWN-B'])]
'''


def test_a_candidate_cannot_see_earlier_candidates_in_its_memory(quixbugs_dir):
    """Candidate processes fork from a zygote that never read a request: an earlier
    candidate's source is nowhere in a later one's memory, while the later one's own source
    text is found by the same scan (so the scan reaches where request data lives)."""
    cfg = replace(CFG, time_floor_s=10.0, candidate_timeout_s=30.0)
    with Judge(select(load_problems(quixbugs_dir), ["gcd"]), cfg) as judge:
        _scan_after_earlier(judge)


def _scan_after_earlier(judge: Judge) -> None:
    earlier = BODY + "    note = 'ZZQXMARKER-A' * 40\n    while b:\n        a, b = b, a % b\n" \
                     "    return a\n"
    for _ in range(3):
        assert judge.judge(Candidate("earlier", "gcd", earlier)).passed == 6
    scan = judge.judge(Candidate("scanner", "gcd", SCAN))
    assert scan.tests[0].detail.startswith("got [0, "), scan.tests[0].detail
    assert scan.tests[0].detail != "got [0, 0]"
