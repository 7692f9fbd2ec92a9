"""The dynamic batcher: one thread per loaded model version.

Requests are queued from the event loop; the thread takes the first one,
merges whatever else is already queued (or arrives within
``max_queue_delay_us``) up to ``max_batch_size`` rows, runs onnxruntime once
(which releases the GIL), splits the outputs back by rows and hands the whole
batch to the event loop in one callback. When a merged run fails, each request
is run alone, so that one bad request never fails the others.

The queue is bounded: ``submit`` raises ``Unavailable`` (503 with Retry-After)
instead of letting latency grow without limit.

A request the server holds alone (no other request read and unanswered, on any
connection), given to an idle batcher of a fast model (recent runs under
``INLINE_MAX_US``), runs at once on the event loop's thread: there is nothing to
merge it with, and two thread hand-offs would cost more than the model. As soon
as a second request is in hand, requests queue and merge as above.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from appliance.errors import Unavailable
from appliance.serving.providers import ort_errors


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


_STOP = object()
INLINE_MAX_US = 300.0  # a model slower than this never blocks the event loop


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
    ) -> None:
        self.name = name
        self._run = run
        self._output_names = output_names
        self._batchable = batchable
        self._max_rows = max_batch_size if batchable else 1
        self._delay = max_queue_delay_us / 1e6
        self.capacity = capacity
        self.pending = 0  # touched on the event loop's thread only
        self._loop = loop
        self._on_batch = on_batch
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._compute_us = INLINE_MAX_US  # moving average; starts at the limit, not under it
        self._errors = ort_errors() + (ValueError, TypeError)
        self._thread = threading.Thread(target=self._main, name=f"batcher-{name}", daemon=True)
        self._thread.start()

    def submit(self, job: Job, inline: bool = False) -> None:
        """Queue a job (event loop thread only); with ``inline``, run it now if idle."""
        if self.pending >= self.capacity:
            raise Unavailable(f"model '{self.name}' is overloaded: its queue is full")
        self.pending += 1
        job.enqueued = time.perf_counter()
        if inline and self.pending == 1 and self._compute_us < INLINE_MAX_US:
            self._execute([job], job.rows, job.enqueued)
            self._deliver([job], job.rows, int((time.perf_counter() - job.enqueued) * 1e6))
            return
        self._queue.put(job)

    def stop(self) -> None:
        """Finish what is queued, then end the thread."""
        self._queue.put(_STOP)

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def _deliver(self, batch: list[Job], rows: int, compute_us: int) -> None:
        self.pending -= len(batch)
        self._compute_us = 0.8 * self._compute_us + 0.2 * compute_us
        self._on_batch(batch, rows, compute_us)
        for job in batch:
            if not job.future.done():
                job.future.set_result(None)

    def _main(self) -> None:
        carry: Any = None
        while True:
            job = carry if carry is not None else self._queue.get()
            carry = None
            if job is _STOP:
                return
            batch = [job]
            rows = job.rows
            deadline = None
            while rows < self._max_rows:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    if self._delay <= 0:
                        break
                    if deadline is None:
                        deadline = job.enqueued + self._delay
                    remaining = deadline - time.perf_counter()
                    if remaining <= 0:
                        break
                    try:
                        nxt = self._queue.get(timeout=remaining)
                    except queue.Empty:
                        break
                if nxt is _STOP or rows + nxt.rows > self._max_rows or (
                    nxt.shape_key != job.shape_key
                ):
                    carry = nxt
                    break
                batch.append(nxt)
                rows += nxt.rows
            started = time.perf_counter()
            self._execute(batch, rows, started)
            compute_us = int((time.perf_counter() - started) * 1e6)
            try:
                self._loop.call_soon_threadsafe(self._deliver, batch, rows, compute_us)
            except RuntimeError:
                return  # the event loop is closed: the server is gone

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
