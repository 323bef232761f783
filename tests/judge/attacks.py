"""The hostile candidates of tests/judge/test_adversarial.py, as source text.

Most first switch the in-process audit guard off (`NEUTER`: its state is Python state a
candidate can rebind), so that what stops them is the kernel boundary. `classic` and
`root_causes` are the first red-team passes (issue 11); `round3_attacks`, `LEAVE_STATE` and
`READ_STATE` are written from the root causes of issue 21.
"""

from __future__ import annotations

from pathlib import Path

BODY = "def gcd(a, b):\n"
# Root cause 1: the guard's checks read module globals a candidate can rebind (here: every
# path counts as inside the sandbox except under the dataset's deny-list root).
NEUTER = ("import sys, os\n_g = sys.modules['coral.judge.guard']\n"
          "_g._inside = lambda path, roots: 'quixbugs' not in ''.join(roots)\n"
          "_g._DENY_EVENTS = frozenset()\n"
          "_g._DENY_PREFIXES = ('never.',)\n_g._DENY_MODULES = frozenset()\n")


def classic(S: str, D: str, Q: str) -> dict[str, str]:
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


def root_causes(base: Path, data: Path, sock: str) -> dict[str, str]:
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


FILL_TMP = ("    with open('/tmp/fill', 'wb') as f:\n        try:\n"
            "            f.write(b'x' * (15 << 20))\n        except OSError:\n            pass\n")
SELF_ONLY_CALLS = NEUTER + '''import resource, ctypes
libc = sys.modules['coral.judge.candidate']._LIBC
def gcd(a, b):
    codes = []
    def attempt(f):
        try:
            codes.append(f())
        except OSError as e:
            codes.append(e.errno)
        except Exception as e:
            codes.append(type(e).__name__)
    for pid in (1, 2, 3, os.getppid()):
        attempt(lambda: resource.prlimit(pid, resource.RLIMIT_NOFILE, (8, 8)) and 0)
        attempt(lambda: resource.prlimit(pid, resource.RLIMIT_DATA, (1 << 20, 1 << 20)) and 0)
        attempt(lambda: os.setpriority(os.PRIO_PROCESS, pid, 19))
        attempt(lambda: os.sched_setscheduler(pid, os.SCHED_IDLE, os.sched_param(0)))
        attempt(lambda: os.sched_setaffinity(pid, {0}))
        attempt(lambda: libc.syscall(251, 1, pid, 7 << 13) and ctypes.get_errno())  # ioprio_set
    attempt(lambda: os.setpriority(os.PRIO_USER, 0, 19))
    attempt(lambda: os.setpriority(os.PRIO_PGRP, 0, 19))
    limit = (ctypes.c_ulong * 2)(8, 8)  # prlimit64 on pid 1 with high bits set (x86-64: 302)
    attempt(lambda: libc.syscall(302, ctypes.c_long(0x100000001), 7, limit, None)
            and ctypes.get_errno())
    return sorted(set(codes))
'''
SIGNAL_OWNER = NEUTER + '''import ctypes, fcntl, signal, termios
def gcd(a, b):
''' + FILL_TMP + '''    codes = []
    for cmd, arg in ((fcntl.F_SETOWN, os.getppid()), (fcntl.F_SETOWN, -os.getpgid(0)),
                     (10, signal.SIGSTOP), (fcntl.F_SETFL, os.O_ASYNC | os.O_WRONLY)):
        try:
            codes.append(fcntl.fcntl(3, cmd, arg))
        except OSError as e:
            codes.append(e.errno)
    # F_SETOWN with high bits set in the command (x86-64 fcntl is syscall 72)
    libc = sys.modules['coral.judge.candidate']._LIBC
    codes.append(libc.syscall(72, 3, ctypes.c_long((1 << 32) | fcntl.F_SETOWN), 2)
                 and ctypes.get_errno())
    for req in (termios.FIOASYNC, 0x8901):
        try:
            codes.append(fcntl.ioctl(3, req, b'\\x01\\x00\\x00\\x00'))
        except OSError as e:
            codes.append(e.errno)
    return sorted(set(map(str, codes)))
'''
RAW_THREADS = NEUTER + '''import ctypes, time, threading
libc = sys.modules['coral.judge.candidate']._LIBC
def gcd(a, b):
    attr = ctypes.create_string_buffer(256)
    libc.pthread_attr_init(attr)
    libc.pthread_attr_setstacksize(attr, ctypes.c_size_t(1 << 16))
    pause, tid, n = ctypes.cast(libc.pause, ctypes.c_void_p), ctypes.c_ulong(), 0
    while n < 5000 and libc.pthread_create(ctypes.byref(tid), attr, pause, None) == 0:
        n += 1
    try:
        while True:
            threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
            n += 1
    except RuntimeError:
        pass
    time.sleep(0.3)
    return n
'''
IMPORT_WORK = '''import time
_t0 = time.monotonic()
while time.monotonic() - _t0 < 0.4:
    pass
def gcd(a, b):
    while b:
        a, b = b, a % b
    return a
'''


def round3_attacks() -> dict[str, tuple[str, str]]:
    """name -> (problem, source); the prefix rNN names the root cause of issue 21."""
    return {
        "r1_huge_int_on_float_problem": ("sqrt", "def sqrt(x, epsilon):\n    return 2 ** 4000\n"),
        "r2_nested_frozensets": ("gcd", BODY + "    v = tuple(range(60000))\n"
                                 "    for i in range(190):\n        v = frozenset([v, i])\n"
                                 "    return v\n"),
        "r3_other_pids": ("gcd", SELF_ONLY_CALLS),
        "r4_signal_owner": ("gcd", SIGNAL_OWNER),
        "r5_threads": ("gcd", RAW_THREADS),
        "r7_import_time": ("gcd", IMPORT_WORK),
    }


LEAVE_STATE = NEUTER + '''import fcntl
def gcd(a, b):
    x, y = a, b
    while y:
        x, y = y, x % y
    os.setxattr('/tmp', f'user.{a}_{b}', str(x).encode())
    os.chmod('/tmp', 0o1700 | (x & 0o77))
    os.utime('/tmp', ns=(x, x))
    fcntl.fcntl(3, fcntl.F_SETFL, os.O_NONBLOCK)
    fcntl.fcntl(3, 1031, 4096)  # F_SETPIPE_SZ
''' + FILL_TMP + '''    return x
'''
# Never computes gcd: answers what an earlier candidate left, else describes what it sees.
READ_STATE = NEUTER + '''import fcntl
def gcd(a, b):
    try:
        return int(os.getxattr('/tmp', f'user.{a}_{b}'))
    except OSError:
        pass
    st = os.stat('/tmp')
    return repr([os.listxattr('/tmp'), oct(st.st_mode), st.st_atime_ns, st.st_mtime_ns,
                 st.st_nlink, fcntl.fcntl(3, fcntl.F_GETFL), fcntl.fcntl(3, 1032)])
'''
