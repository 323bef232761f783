"""pyseccomp without libseccomp.so.2 raises RuntimeError("Unable to find libseccomp") on
import: the judge treats that as the library missing (auto: the guard, with a warning; strict:
refused, naming the install line), instead of failing to start.

Run in its own interpreter with a pyseccomp on PYTHONPATH that fails to import exactly as the
real one does on such a machine (its module-level check raises that RuntimeError).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

SCRIPT = """
import json, logging
logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
from coral.judge import boundary
auto = boundary.choose("auto")
try:
    boundary.choose("strict")
    strict = None
except boundary.IsolationUnavailable as exc:
    strict = str(exc)
print(json.dumps({"auto": auto.kind, "detail": auto.detail, "strict": strict,
                  "hint": boundary.INSTALL_HINT}))
"""


def test_pyseccomp_without_libseccomp_falls_back(tmp_path):
    fake = tmp_path / "site"
    fake.mkdir()
    # pyseccomp 0.1.2's own module-level check where ctypes finds no libseccomp
    (fake / "pyseccomp.py").write_text('raise RuntimeError("Unable to find libseccomp")\n')
    env = dict(os.environ, PYTHONPATH=f"{fake}{os.pathsep}{REPO}")
    env.pop("CORAL_SANDBOX_ISOLATION", None)
    out = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["auto"] == "guard" and "Unable to find libseccomp" in seen["detail"]
    assert "WARNING sandbox isolation: guard" in out.stderr
    assert seen["strict"] and "Unable to find libseccomp" in seen["strict"]
    assert seen["hint"] in seen["strict"]
