"""Discrete-event simulations of serving, driven by logged arrivals and a fitted service
time (``appliance.capacity.fit``).

``batcher``: the dynamic batcher of a tabular model (``appliance.serving.batcher``).
One run at a time; when the model is free and requests wait, it takes them in arrival
order up to ``max_batch_size`` rows. With ``max_queue_delay`` above zero it first
waits until the oldest request has waited that long or the rows fill a batch,
whichever comes first (with zero it runs what is queued at once). A run of b rows from
k requests takes t(b, k); where each request also costs work of its own on the event
loop (decoding it), that work is a server of its own in front of the batcher. A
request's queue time is from its arrival in the batcher's queue to the start of its run;
its latency from its arrival to the end of the run.

``steps``: continuous batching of a language model (onnxruntime-genai's engine). Every
step advances each running sequence by one token and takes t(n) for n sequences;
a request joins at the next step after it arrives (up to ``max_sequences`` at once,
the rest wait) and leaves after its tokens. Its time to first token is from its
arrival to the end of its first step.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

Floats = Sequence[float] | np.ndarray  # seconds, or counts, one per request


@dataclass(frozen=True)
class Outcome:
    latency: np.ndarray  # seconds, per request, in arrival order
    queue: np.ndarray  # seconds before the request's run (or first step) started
    batch_rows: np.ndarray  # the rows of the run (or the sequences of the first step)
    first: np.ndarray | None = None  # language models: time to first token

    def p95(self) -> float:
        return float(np.percentile(self.latency, 95)) if len(self.latency) else 0.0


def decoded(arrivals: Floats, work: Floats) -> np.ndarray:
    """When each request leaves a single FIFO server that spends ``work`` seconds on it
    (the event loop decoding requests): d_i = max(a_i, d_(i-1)) + w_i."""
    out = np.empty(len(arrivals))
    done = -np.inf
    for i, (a, w) in enumerate(zip(arrivals, work, strict=True)):
        done = max(a, done) + w
        out[i] = done
    return out


def batcher(arrivals: Floats, rows: Floats, service: Callable[[int, int], float],
            max_batch_size: int, max_queue_delay: float,
            per_request: Floats | None = None) -> Outcome:
    """Replay ``arrivals`` (seconds, ascending) of requests of ``rows`` rows; a run of b
    rows from k requests takes ``service(b, k)``. With ``per_request`` (seconds, one per
    request), each request first passes the event loop, which decodes one request at a
    time (``decoded``), and joins the batcher's queue when decoded: the decoding of
    waiting requests overlaps the run in progress. Latency counts from the arrival; queue
    time from joining the batcher's queue."""
    start_at = np.asarray(arrivals, dtype=np.float64)
    if per_request is not None:
        ready = decoded(start_at, per_request)
        out = batcher(ready, rows, service, max_batch_size, max_queue_delay)
        return Outcome(out.latency + (ready - start_at), out.queue, out.batch_rows)
    n = len(arrivals)
    latency = np.zeros(n)
    queued = np.zeros(n)
    sizes = np.zeros(n, dtype=np.int64)
    waiting: collections.deque[int] = collections.deque()
    waiting_rows = 0.0
    i = 0
    free = 0.0  # when the model finishes its current run
    while i < n or waiting:
        if not waiting:
            now = max(free, arrivals[i])
        else:
            now = max(free, arrivals[waiting[0]])
        while i < n and arrivals[i] <= now:
            waiting.append(i)
            waiting_rows += rows[i]
            i += 1
        if max_queue_delay > 0 and waiting_rows < max_batch_size:
            deadline = arrivals[waiting[0]] + max_queue_delay
            while i < n and arrivals[i] <= deadline and waiting_rows < max_batch_size:
                waiting.append(i)
                waiting_rows += rows[i]
                now = max(now, arrivals[i])
                i += 1
            if waiting_rows < max_batch_size:
                now = max(now, deadline)
        batch: list[int] = []
        batch_rows = 0.0
        while waiting and (not batch or batch_rows + rows[waiting[0]] <= max_batch_size):
            j = waiting.popleft()
            batch.append(j)
            batch_rows += rows[j]
        waiting_rows -= batch_rows
        end = now + service(int(batch_rows), len(batch))
        for j in batch:
            queued[j] = now - arrivals[j]
            latency[j] = end - arrivals[j]
            sizes[j] = int(batch_rows)
        free = end
    return Outcome(latency, queued, sizes)


def steps(arrivals: Floats, tokens: Floats, step: Callable[[int], float],
          max_sequences: int, prefill: float = 0.0) -> Outcome:
    """Replay ``arrivals`` of requests that each generate ``tokens`` tokens; ``prefill`` is
    added to the first step a sequence is in."""
    n = len(arrivals)
    latency = np.zeros(n)
    queued = np.zeros(n)
    first = np.zeros(n)
    sizes = np.zeros(n, dtype=np.int64)
    left = [max(1, int(t)) for t in tokens]
    running: list[int] = []
    waiting: collections.deque[int] = collections.deque()
    i = 0
    now = 0.0
    while i < n or waiting or running:
        if not running and not waiting:
            now = max(now, arrivals[i])
        while i < n and arrivals[i] <= now:
            waiting.append(i)
            i += 1
        joined = []
        while waiting and len(running) < max_sequences:
            j = waiting.popleft()
            queued[j] = now - arrivals[j]
            running.append(j)
            joined.append(j)
        duration = step(len(running)) + (prefill if joined else 0.0)
        now += duration
        for j in joined:
            first[j] = now - arrivals[j]
            sizes[j] = len(running)
        still = []
        for j in running:
            left[j] -= 1
            if left[j] == 0:
                latency[j] = now - arrivals[j]
            else:
                still.append(j)
        running = still
    return Outcome(latency, queued, sizes, first)


def busiest(arrivals: Floats, span: float) -> tuple[int, int]:
    """The indices [start, stop) of the ``span`` seconds of ``arrivals`` (ascending) that
    hold the most requests."""
    arr = np.asarray(arrivals)
    if not len(arr):
        return 0, 0
    ends = np.searchsorted(arr, arr + span, side="left")
    counts = ends - np.arange(len(arr))
    start = int(np.argmax(counts))
    return start, int(ends[start])


def overlap_peak(starts: Floats, ends: Floats) -> int:
    """The most intervals [start, end) open at one time."""
    events = sorted([(s, 1) for s in starts] + [(e, -1) for e in ends])
    peak = current = 0
    for _, delta in events:
        current += delta
        peak = max(peak, current)
    return peak
