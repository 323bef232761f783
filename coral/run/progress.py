"""What `coral run` shows while it works: stage bars, one line per generation, a heartbeat.

On a terminal: one tqdm bar per stage (adapters ready / fixes generated / candidates judged,
totals growing as each generation adds its genomes) and, above the bars, one line per
finished generation. Without a terminal (``| tee``, a job log) the bars would be invisible, so
the same generation lines are printed plus a heartbeat line when nothing was printed for
`heartbeat_s` seconds (the engine calls `tick` at least every few seconds while it waits).
Everything goes to one stream (stdout by default); `write` prints a line without tearing the
bars, and the console log handler (coral.run.console) prints CORAL's warnings through it.

The clock is read only for what is displayed, never for a decision of the search.
"""

from __future__ import annotations

import sys
import time
from typing import Callable, Optional, TextIO

STAGES = ("adapters", "generated", "judged")
_UNITS = {"adapters": "adapter", "generated": "fix", "judged": "cand"}
HEARTBEAT_S = 30.0


def _rate(value: Optional[float]) -> str:
    """A fraction as a percentage, '-' when unknown."""
    return "-" if value is None else f"{value:.0%}"


def _names(names: list, limit: int = 4) -> str:
    """A short list of problem names: the first `limit`, then '+N'."""
    shown = ", ".join(names[:limit])
    return shown + (f" +{len(names) - limit}" if len(names) > limit else "")


def _fixed(s: dict) -> str:
    """'fixed 2 (gcd, sieve)' from the best genome's fixed problems."""
    names = list(s.get("best_fixed") or [])
    return f"fixed {len(names)}" + (f" ({_names(names)})" if names else "")


def _pass_at_k(s: dict) -> Optional[str]:
    """'best pass@2 0.375': the best genome's `fixed` objective, which is pass@k per problem
    (mean over problems) when the config scores with pass@k (`k` given), else None."""
    fixed = (s.get("best_scores") or {}).get("fixed")
    return None if not s.get("k") or fixed is None else f"best pass@{s['k']} {fixed:.3f}"


# The fields of a generation line, in order; each returns its text or None (left out).
# A new figure in the engine's generation summary is one entry here.
LINE_FIELDS: tuple[Callable[[dict], Optional[str]], ...] = (
    _pass_at_k,
    lambda s: f"best fitness {s['best_display']:.3f}" if "best_display" in s else None,
    _fixed,
    lambda s: f"cache hits {_rate(s.get('cache_hit_rate'))}",
    lambda s: (f"samples spent {s['samples_spent']}" if s.get("samples_spent") is not None
               else None),
    lambda s: f"{s['seconds']:.0f} s" if "seconds" in s else None,
)


def generation_line(summary: dict, generations: Optional[int] = None) -> str:
    """One line for a finished generation (the engine's `generation_summary`)."""
    of = f"/{generations}" if generations else ""
    head = f"generation {summary['generation'] + 1}{of}:"
    return "  ".join([head, *(t for t in (f(summary) for f in LINE_FIELDS) if t)])


class Progress:
    """Bars on a terminal, lines and heartbeats elsewhere; nothing at all when disabled."""

    def __init__(self, enabled: Optional[bool] = None, desc_prefix: str = "", *,
                 out: Optional[TextIO] = None, bars: Optional[bool] = None,
                 generations: Optional[int] = None, pass_at_k: Optional[int] = None,
                 heartbeat_s: float = HEARTBEAT_S) -> None:
        self.out = out or sys.stdout
        tty = bool(getattr(self.out, "isatty", lambda: False)())
        self.enabled = True if enabled is None else bool(enabled)
        self.bars = self.enabled and (tty if bars is None else bool(bars))
        self._want_bars = self.bars
        self.generations = generations
        self.pass_at_k = pass_at_k
        self.heartbeat_s = heartbeat_s
        self.counts = {s: 0 for s in STAGES}
        self.totals = {s: 0 for s in STAGES}
        self._started = time.monotonic()
        self._last_line = self._started
        self._desc_prefix = desc_prefix
        self._bars = {}

    def _open_bars(self) -> None:
        """Draw the bars when the first work is known (not before the start-up lines)."""
        from tqdm import tqdm
        for pos, stage in enumerate(STAGES):
            self._bars[stage] = tqdm(total=self.totals[stage], initial=self.counts[stage],
                                     desc=f"{self._desc_prefix}{stage:>9}", unit=_UNITS[stage],
                                     position=pos, leave=True, file=self.out,
                                     dynamic_ncols=True)

    def add(self, stage: str, n: int) -> None:
        """More work of a stage became known."""
        self.totals[stage] += n
        if self.bars and not self._bars:
            self._open_bars()
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

    def write(self, line: str) -> None:
        """Print one line (above the bars on a terminal); a no-op when disabled."""
        if not self.enabled:
            return
        if self._bars:
            from tqdm import tqdm
            tqdm.write(line, file=self.out)
        else:
            print(line, file=self.out, flush=True)
        self._last_line = time.monotonic()

    def generation_done(self, summary: dict) -> None:
        """The line of a finished generation."""
        # samples_spent comes from the engine: the budget's count over every driver of the run
        self.write(generation_line(dict(summary, k=self.pass_at_k), self.generations))

    def tick(self, generation: int, phase: str = "search") -> None:
        """Heartbeat without bars when nothing was printed for `heartbeat_s` seconds."""
        now = time.monotonic()
        if not self.enabled or self.bars or now - self._last_line < self.heartbeat_s:
            return
        where = ("held-out check" if phase != "search" else
                 f"generation {generation + 1}" + (f"/{self.generations}"
                                                   if self.generations else ""))
        stages = ", ".join(f"{s} {self.counts[s]}/{self.totals[s]}" for s in STAGES)
        self.write(f"[{_clock(now - self._started)}] {where}: {stages}")

    def restart(self, desc_prefix: str = "", generations: Optional[int] = None) -> None:
        """Start over for the next run on the same console (`coral compare`'s runs): the last
        run's bars are cleared (its line says how it ended), counts start from zero."""
        for bar in self._bars.values():
            bar.leave = False
        self.close()
        self.bars = self._want_bars
        self.counts = {s: 0 for s in STAGES}
        self.totals = {s: 0 for s in STAGES}
        self._desc_prefix = desc_prefix
        if generations is not None:
            self.generations = generations

    def close(self) -> None:
        """Close the bars (leaves the final state on screen); no more bars after this."""
        for bar in self._bars.values():
            bar.close()
        self._bars = {}
        self.bars = False


def _clock(seconds: float) -> str:
    """Elapsed time as 1h02m03s / 2m03s / 45s."""
    s = int(seconds)
    h, m = s // 3600, s % 3600 // 60
    return (f"{h}h{m:02d}m{s % 60:02d}s" if h else f"{m}m{s % 60:02d}s" if m else f"{s}s")
