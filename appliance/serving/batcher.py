"""The dynamic batcher: one per loaded model version.

Requests are merged, up to ``max_batch_size`` rows with equal trailing shapes, into
one onnxruntime run, whose outputs are split back by rows. When a merged run fails,
each request is run alone, so that one bad request never fails the others. A request
waits for others at most ``max_queue_delay_us`` (default 0: take what is already there,
as Triton does).

Where a batch runs depends on how long the model takes (the median of its last
``RECENT_RUNS`` runs, seeded by the warm-up run; a median, so that a run the operating
system preempted, common on a busy machine, does not move a fast model off the loop):

- A fast model (under ``INLINE_MAX_US`` a run) runs on the event loop's thread. The
  requests decoded in one turn of the loop are held, and one callback at the end of
  that turn (or after the queue delay) merges and runs them. Handing a batch to another
  thread and back would cost more than the model: about 120 us at the median on a quiet
  2-core machine, two wake-ups and the GIL taken back from the event loop each way. A
  request the server holds alone (no other request read and unanswered, on any
  connection) runs at once: there is nothing to merge it with.
- A slower model runs on a thread of its own, so that it never stalls the event loop:
  the thread takes everything queued (waiting up to the queue delay for more), runs it
  in batches, and hands each batch back to the event loop through a pipe of its own: one
  byte written, one read on the loop, which answers every batch waiting. (The loop's
  ``call_soon_threadsafe`` costs about 40 us more a batch on a 2-core machine: its wake-up
  byte is read back in a loop that ends in an exception, after the callback has run.)

The queue is bounded: ``submit`` raises ``Unavailable`` (503 with Retry-After)
instead of letting latency grow without limit.
"""

from __future__ import annotations

import asyncio
import collections
import os
import queue
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from appliance.errors import Unavailable
from appliance.onnxtools.providers import ort_errors


@dataclass(slots=True, eq=False)
class Job:
    inputs: dict[str, np.ndarray]
    rows: int
    shape_key: tuple[tuple[int, ...], ...]  # trailing axes; only equal keys merge
    future: asyncio.Future[None]
    enqueued: float = 0.0
    outputs: dict[str, np.ndarray] = field(default_factory=dict)
    error: BaseException | None = None
    queue_us: int = 0
    batch_rows: int = 0


class Tally:
    """Jobs handed to batcher threads and not yet answered, over the batchers that share it
    (an engine's); counted on the event loop's thread. While it is above zero, an event loop
    that keeps polling holds the GIL those threads need to start and end their runs."""

    __slots__ = ("n",)

    def __init__(self) -> None:
        self.n = 0


_STOP = object()
INLINE_MAX_US = 100.0  # a model slower than this runs on its own thread
RECENT_RUNS = 15  # the runs whose median says how long the model takes


def _close_fds(fds: list[int]) -> None:
    """Close the descriptors in ``fds`` once, whichever thread comes first."""
    while True:
        try:
            fd = fds.pop()
        except IndexError:
            return
        os.close(fd)


def batches(jobs: list[Job], max_rows: int) -> Iterator[tuple[list[Job], int]]:
    """Split jobs, in order, into runs of equal trailing shapes and at most ``max_rows``."""
    groups: dict[tuple[tuple[int, ...], ...], tuple[list[Job], int]] = {}
    for job in jobs:
        batch, rows = groups.get(job.shape_key, ([], 0))
        if batch and rows + job.rows > max_rows:
            yield batch, rows
            batch, rows = [], 0
        batch.append(job)
        groups[job.shape_key] = (batch, rows + job.rows)
    yield from groups.values()


class Batcher:
    def __init__(
        self,
        name: str,
        run: Callable[[dict[str, np.ndarray]], list[np.ndarray]],
        output_names: tuple[str, ...],
        *,
        batchable: bool,
        max_batch_size: int,
        max_queue_delay_us: int,
        capacity: int,
        loop: asyncio.AbstractEventLoop,
        on_batch: Callable[[list[Job], int, int], None],
        compute_us: float = INLINE_MAX_US,
        on_threads: Tally | None = None,
    ) -> None:
        self.name = name
        self.on_threads = on_threads if on_threads is not None else Tally()
        self._run = run
        self._output_names = output_names
        self._max_rows = max_batch_size if batchable else 1
        self._delay = max_queue_delay_us / 1e6
        self.capacity = capacity
        self.pending = 0  # touched on the event loop's thread only
        self._loop = loop
        self._on_batch = on_batch
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        # The median of recent runs; without a measurement it starts at the limit, not under.
        self._compute_us = compute_us
        self._recent: collections.deque[float] = collections.deque([compute_us],
                                                                   maxlen=RECENT_RUNS)
        # Held for the end of this turn of the event loop (fast models only).
        self._held: list[Job] = []
        self._held_rows = 0
        self._flush_handle: asyncio.Handle | None = None
        self._errors = ort_errors() + (ValueError, TypeError)
        # Batches the thread finished, and the pipe whose byte wakes the loop to answer them.
        self._done: collections.deque[tuple[list[Job], int, int]] = collections.deque()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._wake_fds = [self._wake_r, self._wake_w]  # emptied when they are closed
        weakref.finalize(self, _close_fds, self._wake_fds)  # a loop that ended first
        loop.call_soon_threadsafe(loop.add_reader, self._wake_r, self._drain)
        self._thread = threading.Thread(target=self._main, name=f"batcher-{name}", daemon=True)
        self._thread.start()

    @property
    def on_loop(self) -> bool:
        """Whether batches run on the event loop's thread (the model is fast)."""
        return self._compute_us < INLINE_MAX_US

    def submit(self, job: Job, alone: bool = False) -> None:
        """Queue a job (event loop thread only). ``alone``: the server holds no other
        request, so a fast model runs it now."""
        if self.pending >= self.capacity:
            raise Unavailable(f"model '{self.name}' is overloaded: its queue is full")
        self.pending += 1
        job.enqueued = time.perf_counter()
        if not self.on_loop:
            self.on_threads.n += 1
            self._queue.put(job)
            return
        if alone and self.pending == 1:
            self._run_here([job], job.rows)
            return
        self._held.append(job)
        self._held_rows += job.rows
        if self._held_rows >= self._max_rows:
            self._flush()
        elif self._flush_handle is None:
            if self._delay <= 0:
                self._flush_handle = self._loop.call_soon(self._flush)
            else:
                self._flush_handle = self._loop.call_later(self._delay, self._flush)

    def stop(self) -> None:
        """Finish what is queued, then end the thread (held jobs run at their callback)."""
        self._queue.put(_STOP)

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    # ---- on the event loop's thread ------------------------------------------

    def _flush(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        held, self._held, self._held_rows = self._held, [], 0
        for batch, rows in batches(held, self._max_rows):
            self._run_here(batch, rows)

    def _run_here(self, batch: list[Job], rows: int) -> None:
        started = time.perf_counter()
        self._execute(batch, rows, started)
        self._deliver(batch, rows, int((time.perf_counter() - started) * 1e6))

    def _deliver(self, batch: list[Job], rows: int, compute_us: int) -> None:
        self.pending -= len(batch)
        self._recent.append(compute_us)
        self._compute_us = sorted(self._recent)[(len(self._recent) - 1) // 2]  # lower median
        self._on_batch(batch, rows, compute_us)
        for job in batch:
            if not job.future.done():
                job.future.set_result(None)

    def _drain(self) -> None:
        """The wake-up pipe is readable: answer every batch the thread has finished."""
        try:
            os.read(self._wake_r, 4096)
        except BlockingIOError:
            pass  # a byte an earlier drain answered for
        try:
            while self._done:
                batch, rows, compute_us = self._done.popleft()
                self.on_threads.n -= len(batch)
                self._deliver(batch, rows, compute_us)
        finally:
            if self._done:  # a delivery raised: the rest are answered in the next turn
                self._loop.call_soon(self._drain)

    def _close_wake(self) -> None:
        """After the thread's last batch: answer what is left, then close the pipe."""
        self._drain()
        self._loop.remove_reader(self._wake_r)
        _close_fds(self._wake_fds)

    # ---- on the batcher's thread ---------------------------------------------

    def _main(self) -> None:
        try:
            self._work()
        finally:
            try:
                self._loop.call_soon_threadsafe(self._close_wake)
            except RuntimeError:  # the event loop is closed: nothing is left to answer
                _close_fds(self._wake_fds)

    def _hand_back(self, batch: list[Job], rows: int, compute_us: int) -> bool:
        """Queue a finished batch for the loop and wake it; False once the loop is closed."""
        if self._loop.is_closed():
            return False  # the server is gone
        self._done.append((batch, rows, compute_us))
        try:
            os.write(self._wake_w, b"\0")
        except BlockingIOError:
            pass  # the pipe is full of bytes the loop has yet to read: it will drain this too
        return True

    def _work(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is _STOP:
                return
            jobs = [first]
            rows = first.rows
            deadline = first.enqueued + self._delay
            while rows < self._max_rows:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    remaining = deadline - time.perf_counter()
                    if remaining <= 0:
                        break
                    try:
                        nxt = self._queue.get(timeout=remaining)
                    except queue.Empty:
                        break
                if nxt is _STOP:
                    stopping = True
                    break
                jobs.append(nxt)
                rows += nxt.rows
            for batch, n in batches(jobs, self._max_rows):
                started = time.perf_counter()
                self._execute(batch, n, started)
                compute_us = int((time.perf_counter() - started) * 1e6)
                if not self._hand_back(batch, n, compute_us):
                    return

    # ---- either thread ---------------------------------------------------------

    def _execute(self, batch: list[Job], rows: int, started: float) -> None:
        for job in batch:
            job.queue_us = int((started - job.enqueued) * 1e6)
            job.batch_rows = rows
        if len(batch) == 1:
            self._run_one(batch[0])
            return
        first = batch[0].inputs
        feed = {name: np.concatenate([j.inputs[name] for j in batch]) for name in first}
        try:
            outs = self._run(feed)
        except self._errors:
            for job in batch:  # find the culprit; the others still get answers
                job.batch_rows = job.rows
                self._run_one(job)
            return
        start = 0
        for job in batch:
            end = start + job.rows
            job.outputs = {n: o[start:end] for n, o in zip(self._output_names, outs, strict=True)}
            start = end

    def _run_one(self, job: Job) -> None:
        try:
            outs = self._run(job.inputs)
        except self._errors as exc:
            job.error = exc
            return
        job.outputs = dict(zip(self._output_names, outs, strict=True))
