"""How many cores decoding may use now: the machine's idle cores plus what this process used.

Asked before every decoding segment (coral.model.decode), so a core the judge held during one
segment is taken back for the next. Ray starts the generation actor of configs/local.yaml on
half a CPU, so torch decodes on one thread; while no adapter trains, the machine's other core
idles (load average 1.3 on 2 cores during generation, issue 20). A fixed two threads was slower
inside a run (docs/models.md: the second core was busy with training then). `FreeCores` decides
at each ask instead: it reads the machine's CPU counters (/proc/stat) and this process's CPU time
over the previous interval, and asks for the cores that were idle plus those this process kept
busy, at least one and at most the CPUs this process may run on. While training (or anything
else) runs, that is what is left; when nothing else runs, every core.

Counting this process's own use is what keeps the answer stable: decoding on two threads
leaves no idle core, but it used two, so it keeps two.
"""

from __future__ import annotations

import os
import time
from typing import Optional


def _machine_ticks() -> Optional[tuple[int, int]]:
    """(idle, total) jiffies of all CPUs since boot, or None where /proc/stat is absent."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)   # idle + iowait
    return idle, sum(fields[:8])   # guest time is already counted in user


def usable_cpus() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def threads_for(idle_share: float, own_cores: float, cpus: int) -> int:
    """Threads for the next batch: idle cores + cores this process used, within [1, cpus].

    idle_share: fraction of all the machine's CPU time that was idle; own_cores: this
    process's CPU seconds per wall second over the same interval.
    """
    machine = os.cpu_count() or cpus
    free = idle_share * machine + own_cores
    return max(1, min(cpus, int(free + 0.25)))   # a core 3/4 free counts


class FreeCores:
    """Per-batch thread count from what was free since the last call (see the module)."""

    MIN_TICKS = 20   # jiffies (all CPUs) an interval needs before it says anything

    def __init__(self, cpus: Optional[int] = None) -> None:
        self.cpus = cpus or usable_cpus()
        self._last = self._sample()
        self._answer = 1

    @staticmethod
    def _sample() -> tuple[Optional[tuple[int, int]], float, float]:
        own = os.times()
        return _machine_ticks(), own.user + own.system, time.monotonic()

    def threads(self) -> int:
        """Threads to decode the next batch or segment with (1 where the counters cannot be
        read; the previous answer when too little time passed to tell)."""
        now = self._sample()
        (ticks0, own0, t0), (ticks1, own1, t1) = self._last, now
        if ticks0 is None or ticks1 is None:
            self._last = now
            return 1
        if ticks1[1] - ticks0[1] < self.MIN_TICKS or t1 <= t0:
            return self._answer
        self._last = now
        idle_share = (ticks1[0] - ticks0[0]) / (ticks1[1] - ticks0[1])
        self._answer = threads_for(idle_share, (own1 - own0) / (t1 - t0), self.cpus)
        return self._answer
