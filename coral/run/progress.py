"""Progress bars per stage (adapters ready / fixes generated / candidates judged) with ETA.

tqdm writes to stderr; bars are off when stderr is not a terminal or with ``--quiet``, so
logs and CI output stay clean. Totals grow as work is discovered (each generation adds its
genomes), which tqdm's ETA handles by rate x remaining.
"""

from __future__ import annotations

import sys
from typing import Optional

STAGES = ("adapters", "generated", "judged")
_UNITS = {"adapters": "adapter", "generated": "fix", "judged": "cand"}


class Progress:
    """One tqdm bar per stage; a no-op when disabled."""

    def __init__(self, enabled: Optional[bool] = None, desc_prefix: str = "") -> None:
        if enabled is None:
            enabled = sys.stderr.isatty()
        self.enabled = bool(enabled)
        self.counts = {s: 0 for s in STAGES}
        self.totals = {s: 0 for s in STAGES}
        self._bars = {}
        if self.enabled:
            from tqdm import tqdm
            for pos, stage in enumerate(STAGES):
                self._bars[stage] = tqdm(total=0, desc=f"{desc_prefix}{stage:>9}",
                                         unit=_UNITS[stage], position=pos, leave=True,
                                         file=sys.stderr, dynamic_ncols=True)

    def add(self, stage: str, n: int) -> None:
        """More work of a stage became known."""
        self.totals[stage] += n
        bar = self._bars.get(stage)
        if bar is not None:
            bar.total = self.totals[stage]
            bar.refresh()

    def advance(self, stage: str, n: int = 1) -> None:
        """n units of a stage finished."""
        self.counts[stage] += n
        bar = self._bars.get(stage)
        if bar is not None:
            bar.update(n)

    def close(self) -> None:
        """Close the bars (leaves the final state on screen)."""
        for bar in self._bars.values():
            bar.close()
        self._bars = {}
