#!/usr/bin/env bash
# Prints the QuixBugs checkout coral uses, found the way `coral` finds it (`coral data path`:
# the config, $CORAL_QUIXBUGS, the copy `coral data pull` made, ../shared/quixbugs); exits 2
# with every place it looked when there is none (`coral data pull` prepares one).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -x .venv/bin/python ]; then exec .venv/bin/python -m coral data path "$@"; fi
exec python3 -m coral data path "$@"
