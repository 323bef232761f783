#!/usr/bin/env bash
# Prints the QuixBugs checkout to use: $CORAL_QUIXBUGS, ../shared/quixbugs, or a clone of
# upstream under .cache/QuixBugs (made on first use; needs network once).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${CORAL_QUIXBUGS:-}" ]; then echo "$CORAL_QUIXBUGS"; exit 0; fi
if [ -d ../shared/quixbugs/python_programs ]; then (cd ../shared/quixbugs && pwd); exit 0; fi
if [ ! -d .cache/QuixBugs/python_programs ]; then
  echo "[setup] cloning QuixBugs (MIT) into .cache/QuixBugs" >&2
  git clone -q --depth 1 https://github.com/jkoppel/QuixBugs .cache/QuixBugs >&2
fi
(cd .cache/QuixBugs && pwd)
