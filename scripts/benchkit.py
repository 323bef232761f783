"""What the benchmark scripts share: JSON-lines output, phases that report failures, timing.

A benchmark prints one JSON object per measurement (and writes it to --out when given), so a
run cut short by a timeout still leaves every measurement taken so far. On CUDA, timings
synchronise the device before and after, and `peak` reads the allocator's high-water mark.
"""

from __future__ import annotations

import gc
import json
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Optional

import torch


class Bench:
    """Emits measurements as JSON lines; keeps them for the summary."""

    def __init__(self, out: Optional[Path]) -> None:
        self.rows: list[dict] = []
        self.out = open(out, "w") if out else None
        self.failed: list[str] = []

    def emit(self, measure: str, **fields: Any) -> dict:
        """Print (and write) one measurement."""
        row = {"measure": measure, **fields}
        line = json.dumps(row)
        print(line, flush=True)
        if self.out:
            self.out.write(line + "\n")
            self.out.flush()
        self.rows.append(row)
        return row

    def phase(self, name: str, fn: Callable[[], Any]) -> Any:
        """Run one phase; a failure is reported as a measurement and the next phase runs."""
        try:
            return fn()
        except Exception as exc:  # scarce GPU time: report it, keep measuring the rest
            self.failed.append(name)
            self.emit(name, error=f"{type(exc).__name__}: {exc}"[:500],
                      traceback=traceback.format_exc(limit=4)[-1500:])
            free()
            return None


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def free() -> None:
    """Drop unreachable objects and hand cached device memory back."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """(seconds, value) of one call, device work included."""
    _sync()
    start = time.perf_counter()
    value = fn()
    _sync()
    return time.perf_counter() - start, value


def gib(n: float) -> float:
    return round(n / 2**30, 2)


def peak(reset: bool = False) -> Optional[float]:
    """Peak GPU memory allocated since the last reset (GiB); None on CPU."""
    if not torch.cuda.is_available():
        return None
    value = gib(torch.cuda.max_memory_allocated())
    if reset:
        torch.cuda.reset_peak_memory_stats()
    return value
