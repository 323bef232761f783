"""Per-batch decoding threads from what was free: idle cores plus the ones generation used."""

from __future__ import annotations

import os

from coral.model.threads import FreeCores, threads_for


def test_threads_follow_idle_cores_plus_own_use():
    machine = os.cpu_count()
    # Everything else idle: every usable core, whatever this process used.
    assert threads_for(1.0, 0.0, 2) == 2
    # Decoding kept the whole machine busy by itself: it keeps those cores.
    assert threads_for(0.0, float(machine), machine) == machine
    # Something else (a training) holds the machine and we got one core: stay at one.
    assert threads_for(0.0, 1.0, machine) == 1
    # Never below one, never above the usable CPUs.
    assert threads_for(0.0, 0.0, 4) == 1
    assert threads_for(1.0, 8.0, 2) == 2


def test_free_cores_reads_this_machine():
    cores = FreeCores()
    sum(i * i for i in range(200_000))   # some CPU time of our own in the interval
    assert 1 <= cores.threads() <= cores.cpus


def test_a_too_short_interval_keeps_the_previous_answer():
    """Asked twice within a few milliseconds (a segment right after a batch starts): the
    counters have not moved, so the answer stays what it was instead of falling to one."""
    import time

    cores = FreeCores()
    time.sleep(0.3)                                  # the machine's idle time: enough to tell
    first = cores.threads()
    assert [cores.threads() for _ in range(5)] == [first] * 5
