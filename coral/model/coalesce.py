"""Coalescing: the requests of many callers (one per genome) share generation batches.

The engine sends one generate call per genome (coral.run.pipeline). Below it, a `Coalescer`
queues every call's rows and a single decoder forms batches of up to `generation.batch_size`
rows across calls, adapters and sampling settings, so genomes whose adapters are ready share
batches instead of each decoding alone. A call returns as soon as its own rows are done, so
judging one genome overlaps decoding the next.

Which rows form the next batch: the oldest call's shortest row, and with it the queued rows
nearest to it in prompt length, from any call. A batch decodes until its longest answer ends,
and answer length follows program length, so rows of the same program (every genome asks for
the same few) decode together instead of a short answer waiting, padded, for a long one; and
larger batches cost less per row (a SmolLM2 row-step on one CPU thread: ~18 ms in a batch of
8, ~12 ms in one of 32). The oldest call has a row in every batch, so no call waits forever;
only rows the backend can run as one batch go together (`batch_group`: the hf backend mixes
LoRA and base rows, coral.model.spans, but runs each DoRA adapter alone). A row's
text does not depend on its batch (per-row seeds, coral.model.sampling), so coalescing changes
the speed, not the texts.

Two drivers: `run_until(ticket)` decodes in the caller's thread until that call is done (the
in-process pools), and `start()` runs a daemon decoder thread while callers block in
`wait(ticket)` (the Ray generation actor, a threaded actor).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Optional, Sequence

from coral.messages import GenerationRequest, GenerationResult

log = logging.getLogger(__name__)

GATHER_S = 0.2   # how long an under-full batch waits for more calls (decoder thread only)


@dataclass(eq=False)
class Ticket:
    """One caller's requests and, as batches finish, their results (same order)."""

    seq: int
    requests: tuple[GenerationRequest, ...]
    results: list = field(default_factory=list)
    left: int = 0
    error: Optional[BaseException] = None
    done: threading.Event = field(default_factory=threading.Event)

    @property
    def finished(self) -> bool:
        """All rows generated, or the call failed."""
        return self.done.is_set()

    def value(self) -> list[GenerationResult]:
        """The results, or the infrastructure error that ended the call."""
        if self.error is not None:
            raise self.error
        return list(self.results)


@dataclass(frozen=True)
class _Row:
    ticket: Ticket
    index: int
    length: int
    group: Hashable


class Coalescer:
    """A queue of calls in front of one backend; see the module docstring."""

    def __init__(self, backend: Any, batch_size: int,
                 on_batch: Callable[[Callable[[], Any]], Any] = lambda run: run()) -> None:
        # on_batch wraps each batch (the actor records busy seconds around it).
        self.backend, self.batch_size, self.on_batch = backend, int(batch_size), on_batch
        self.gather_s = GATHER_S
        self._queue: list[_Row] = []
        self._new: list[Ticket] = []   # submitted, rows not made yet (the decoder makes them)
        self._cond = threading.Condition()
        self._seq = itertools.count()
        self._thread: Optional[threading.Thread] = None
        self._closed = False
        self.batches = 0

    # ------------------------------------------------------------------ callers
    def submit(self, requests: Sequence[GenerationRequest]) -> Ticket:
        """Queue one call's requests; its ticket finishes when all of them are generated."""
        reqs = tuple(requests)
        ticket = Ticket(next(self._seq), reqs, [None] * len(reqs), len(reqs))
        with self._cond:
            if not reqs:
                ticket.done.set()
            else:
                self._new.append(ticket)
            self._cond.notify_all()
        return ticket

    def run_until(self, ticket: Ticket) -> list[GenerationResult]:
        """Decode batches in this thread until `ticket` is done; its results."""
        while not ticket.finished:
            self.step()
        return ticket.value()

    def wait(self, ticket: Ticket) -> list[GenerationResult]:
        """Block until the decoder thread (`start`) has finished `ticket`; its results."""
        ticket.done.wait()
        return ticket.value()

    @property
    def pending(self) -> int:
        """Rows queued and not yet taken into a batch."""
        with self._cond:
            return self._waiting()

    # ------------------------------------------------------------------ the decoder
    def step(self) -> int:
        """Take the next batch off the queue and generate it; rows generated (0: none queued)."""
        with self._cond:
            new, self._new = self._new, []
        # Rows are made here, in the one thread that uses the backend (its tokenizer is not
        # safe to call from the callers' threads at the same time).
        rows = []
        for ticket in new:
            try:
                rows += self._rows(ticket)
            except Exception as exc:  # noqa: BLE001 - the caller re-raises it
                self._fail({ticket}, exc)
        with self._cond:
            self._queue.extend(rows)
            batch = self._take()
        if not batch:
            return 0
        try:
            results = self.on_batch(lambda: self.backend.generate(
                [row.ticket.requests[row.index] for row in batch]))
            if len(results) != len(batch):
                raise RuntimeError(f"backend returned {len(results)} results for "
                                   f"{len(batch)} requests")
        except BaseException as exc:  # the callers re-raise it: infrastructure failures propagate
            self._fail({row.ticket for row in batch}, exc)
            return len(batch)
        self.batches += 1
        for row, res in zip(batch, results):
            row.ticket.results[row.index] = res
            row.ticket.left -= 1
            if row.ticket.left == 0:
                row.ticket.done.set()
        return len(batch)

    def _rows(self, ticket: Ticket) -> list[_Row]:
        """A call's rows, shortest prompt first."""
        rows = [_Row(ticket, i, self._length(r), self._group(r))
                for i, r in enumerate(ticket.requests)]
        return sorted(rows, key=lambda row: (row.length, row.index))

    def _take(self) -> list[_Row]:
        """The next batch: the oldest call's shortest row and the rows of its group nearest
        to it in prompt length (from any call), up to batch_size rows."""
        if not self._queue:
            return []
        anchor = self._queue[0]
        rows = [row for row in self._queue if row.group == anchor.group]
        batch = sorted(rows, key=lambda row: (abs(row.length - anchor.length), row.length,
                                              row.ticket.seq, row.index))[: self.batch_size]
        taken = {id(row) for row in batch}
        self._queue = [row for row in self._queue if id(row) not in taken]
        return sorted(batch, key=lambda row: row.length)

    def _fail(self, tickets: set, exc: BaseException) -> None:
        """End these calls with `exc` and drop the rest of their rows."""
        with self._cond:
            self._queue = [row for row in self._queue if row.ticket not in tickets]
        for ticket in tickets:
            ticket.error = exc
            ticket.done.set()

    def start(self) -> None:
        """Run the decoder in a daemon thread (idempotent)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="coalescer", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._new and not self._closed:
                    self._cond.wait()
                # The engine sends a round's genomes together, but their calls arrive one by
                # one: an under-full batch waits a moment for the rest (a first batch of one
                # genome's 8 rows, then 16, then 8, was seen in make run) instead of starting.
                deadline = time.monotonic() + self.gather_s
                while self._waiting() < self.batch_size and not self._closed:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
                if self._closed:
                    return
            self.step()

    def _waiting(self) -> int:
        """Rows queued or submitted (call with the lock held)."""
        return len(self._queue) + sum(len(t.requests) for t in self._new)

    def close(self) -> None:
        """Stop the decoder thread after its current batch; queued calls fail."""
        with self._cond:
            self._closed = True
            rows, self._queue = self._queue, []
            waiting = {row.ticket for row in rows} | set(self._new)
            self._new = []
            self._cond.notify_all()
        for ticket in waiting:
            ticket.error = RuntimeError("generation stopped (coalescer closed)")
            ticket.done.set()

    # ------------------------------------------------------------------ backend hints
    def _length(self, req: GenerationRequest) -> int:
        """Prompt length in tokens where the backend can tell, else in characters."""
        fn = getattr(self.backend, "prompt_length", None)
        return int(fn(req)) if fn is not None else len(req.buggy_source)

    def _group(self, req: GenerationRequest) -> Hashable:
        """Rows of one group may share a batch (default: any rows)."""
        fn = getattr(self.backend, "batch_group", None)
        return fn(req) if fn is not None else None
