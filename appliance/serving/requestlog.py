"""The request log: rows for monitoring.db, written off the request path.

The event loop appends a tuple to a bounded in-memory queue and moves on; a
background thread takes everything queued every ``flush_interval`` seconds
(or sooner when many rows wait) and inserts it in one transaction. When the
queue is full, or a write fails, rows are dropped and counted, never waited
for: serving must not slow down because the disk did. A row the database can
not take (a value no request should carry) is dropped, counted and logged on
its own; the rows beside it are written and the thread goes on.

Which requests keep their inputs and outputs is ``KeepRate``'s choice, one per
model version: all of them up to ``serving.log_rows_per_second`` rows a second,
then a uniform sample weighted by 1 / its keep probability.
"""

from __future__ import annotations

import collections
import functools
import itertools
import json
import logging
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from appliance.errors import StorageError
from appliance.serving.metrics import Metrics
from appliance.storage.db import Database, immediate

log = logging.getLogger("appliance.serving")

COLUMNS = ("ts", "minute", "model", "version", "route", "request_id", "status", "latency_us",
           "queue_us", "batch_size", "rows", "error", "inputs", "outputs")
_WRITTEN = (*COLUMNS, "weight")  # a row left NULL there reads as weight 1
_INSERT = (f"INSERT INTO requests ({', '.join(_WRITTEN)}) "
           f"VALUES ({', '.join('?' for _ in _WRITTEN)})")


@dataclass(slots=True)
class Entry:
    ts: float
    model: str
    version: int
    route: str
    request_id: str | None
    status: int
    latency_us: int
    queue_us: int
    batch_size: int
    rows: int
    error: str | None = None
    inputs: Mapping[str, np.ndarray] | None = None  # only when kept (see KeepRate)
    outputs: Mapping[str, np.ndarray] | None = None
    weight: float | None = None  # with inputs: 1 / the chance they had of being kept


LLM_COLUMNS = ("ts", "day", "model", "version", "endpoint", "request_id", "status", "stream",
               "prompt_tokens", "completion_tokens", "queue_ms", "ttft_ms", "itl_ms",
               "e2e_ms", "finish_reason", "device", "device_s", "cost", "currency", "error",
               "prompt", "completion", "prompt_ref", "guardrail")
_LLM_INSERT = (f"INSERT INTO llm_requests ({', '.join(LLM_COLUMNS)}) "
               f"VALUES ({', '.join('?' for _ in LLM_COLUMNS)})")


@dataclass(slots=True)
class LlmEntry:
    """One language-model request (see the ``llm_requests`` table)."""

    ts: float
    model: str
    version: int
    endpoint: str
    request_id: str | None
    status: int
    stream: bool
    prompt_tokens: int
    completion_tokens: int
    queue_ms: float
    ttft_ms: float | None
    itl_ms: float | None
    e2e_ms: float
    finish_reason: str | None
    device: str
    device_s: float
    cost: float
    currency: str
    error: str | None = None
    prompt: str | None = None  # only with llm.log_text
    completion: str | None = None
    prompt_ref: str | None = None  # the prompt version (NAME@VERSION) a request named
    guardrail: str | None = None  # JSON: the guardrails' verdicts, per stage


_NUMPY = orjson.OPT_SERIALIZE_NUMPY


def _tensors_json(tensors: Mapping[str, np.ndarray] | None) -> str | None:
    """JSON {name: nested list}. Numeric tensors go through orjson's own numpy encoder: 16
    times faster than ``tolist`` and ``json.dumps`` for a row of 32 floats, and a float32
    is written as its shortest decimal (0.1, not 0.10000000149011612), half the bytes;
    NaN becomes null (missing). Anything it does not take (text, a strided array) the
    standard library writes."""
    if tensors is None:
        return None
    payload: Any = tensors
    try:
        if type(tensors) is not dict or any(v.dtype == object for v in tensors.values()):
            payload = {k: ([str(x) for x in v.ravel()] if v.dtype == object else v)
                       for k, v in tensors.items()}
        return orjson.dumps(payload, option=_NUMPY).decode()
    except TypeError:  # orjson.JSONEncodeError is one
        pass
    return json.dumps(
        {k: (v.tolist() if v.dtype != object else [str(x) for x in v.ravel()])
         for k, v in tensors.items()},
        separators=(",", ":"),
    )


class KeepRate:
    """Whose inputs and outputs one model version's request log keeps.

    Every request while the version's traffic stays within ``rows_per_second`` rows a
    second (rows, not requests: a request may carry a batch); beyond it, each request
    with probability p = rows_per_second / the busier of the last second and this
    one so far, so about ``rows_per_second`` rows a second are kept whatever the
    traffic. p depends only on how many rows came before, never on their content, so
    the kept requests are a uniform sample and weight 1/p makes every statistic over
    them an unbiased estimate of the same statistic over all traffic. A burst that
    starts within a second lowers p as it grows, keeping about
    ``rows_per_second * (1 + ln(burst / rows_per_second))`` rows in that second.
    ``clock`` (seconds) and ``draw`` (uniform in [0, 1)) exist for tests.
    """

    def __init__(self, rows_per_second: float, clock: Callable[[], float] = time.monotonic,
                 draw: Callable[[], float] = random.random) -> None:
        self.rows_per_second = rows_per_second
        self._clock = clock
        self._draw = draw
        self._second: int | None = None
        self._this = 0  # rows offered in the current second
        self._last = 0  # rows offered in the second before it

    def weight(self, rows: int) -> float | None:
        """Offer a request of ``rows`` rows: the weight it is kept with, or None."""
        if self.rows_per_second <= 0:
            return None
        second = int(self._clock())
        if second != self._second:
            self._last = self._this if self._second is not None and \
                second == self._second + 1 else 0
            self._second, self._this = second, 0
        self._this += max(rows, 1)
        busiest = max(self._last, self._this)
        if busiest <= self.rows_per_second:
            return 1.0
        p = self.rows_per_second / busiest
        return 1.0 / p if self._draw() < p else None


class RequestLog:
    def __init__(
        self,
        open_db: Callable[[], Database],
        metrics: Metrics,
        capacity: int,
        flush_interval: float = 0.2,
    ) -> None:
        self._open_db = open_db
        self._metrics = metrics
        self.capacity = capacity
        self._flush_interval = flush_interval
        self._queue: collections.deque[Entry | LlmEntry] = collections.deque()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._main, name="request-log", daemon=True)
        self._started = False
        self._unlogged = 0  # unstorable rows not yet named in the log
        self._last_logged = -UNSTORABLE_LOG_INTERVAL_S

    def start(self) -> None:
        if not self._started:
            self._started = True
            self._thread.start()

    def record(self, entry: Entry | LlmEntry) -> None:
        """Queue one row; never blocks. Rows beyond the capacity are dropped and counted."""
        if len(self._queue) >= self.capacity:
            self._metrics.log_dropped += 1
            return
        self._queue.append(entry)
        if len(self._queue) >= 1000:
            self._wake.set()

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued, then stop the thread."""
        if not self._started:
            return
        self._stopping.set()
        self._wake.set()
        self._thread.join(timeout)

    def _main(self) -> None:
        try:
            db = self._open_db()
        except StorageError as exc:
            log.error("request log disabled: %s", exc)
            self._drop_all()
            return
        try:
            while True:
                self._wake.wait(self._flush_interval)
                self._wake.clear()
                self._flush(db)
                if self._stopping.is_set():
                    self._flush(db)
                    return
        finally:
            db.close()

    def _drop_all(self) -> None:
        while not self._stopping.wait(self._flush_interval):
            n = len(self._queue)
            for _ in range(n):
                self._queue.popleft()
            self._metrics.log_dropped += n

    def _flush(self, db: Database) -> None:
        while self._queue:
            batches: dict[str, list[tuple[Any, ...]]] = {_INSERT: [], _LLM_INSERT: []}
            taken = 0
            while self._queue and taken < 5000:
                e = self._queue.popleft()
                taken += 1
                try:
                    if isinstance(e, LlmEntry):
                        batches[_LLM_INSERT].append(_llm_row(e))
                    else:
                        batches[_INSERT].append(_row(e))
                except _ROW_ERRORS as exc:
                    self._unstorable(1, exc)
            for sql, batch in batches.items():
                if batch:
                    self._write(db, sql, batch)

    def _write(self, db: Database, sql: str, batch: list[tuple[Any, ...]]) -> None:
        if batch:
            started = time.perf_counter()
            try:
                with immediate(db):
                    for start in range(0, len(batch), ROWS_PER_STATEMENT):
                        part = batch[start:start + ROWS_PER_STATEMENT]
                        db.conn.execute(_rows_statement(sql, len(part)),
                                        list(itertools.chain.from_iterable(part)))
            except _ROW_ERRORS:
                # One row the database can not take (text that is no valid UTF-8, a number
                # too large for SQLite): store the others one by one, drop and count it.
                self._store_one_by_one(db, sql, batch)
                return
            except (StorageError, sqlite3.DatabaseError) as exc:
                log.error("request log: dropped %d rows: %s", len(batch), exc)
                self._metrics.log_dropped += len(batch)
                return
            self._metrics.log_written += len(batch)
            log.debug("request log: wrote %d rows in %.1f ms", len(batch),
                      (time.perf_counter() - started) * 1e3)

    def _store_one_by_one(self, db: Database, sql: str,
                          batch: list[tuple[Any, ...]]) -> None:
        try:
            with immediate(db):
                for row in batch:
                    try:
                        db.conn.execute(sql, row)
                    except _ROW_ERRORS as exc:
                        self._unstorable(1, exc)
                    else:
                        self._metrics.log_written += 1
        except (StorageError, sqlite3.DatabaseError) as exc:
            log.error("request log: dropped %d rows: %s", len(batch), exc)
            self._metrics.log_dropped += len(batch)

    def _unstorable(self, n: int, exc: BaseException) -> None:
        """Count rows that can not be stored; log them at most once per interval."""
        self._metrics.log_dropped += n
        self._metrics.log_unstorable += n
        self._unlogged += n
        now = time.monotonic()
        if now - self._last_logged >= UNSTORABLE_LOG_INTERVAL_S:
            log.error("request log: %d rows could not be stored and were dropped (last: %s: %s)",
                      self._unlogged, type(exc).__name__, exc)
            self._unlogged = 0
            self._last_logged = now


# Rows per INSERT statement. executemany runs one SQLite step per row and gives the GIL up
# and takes it back around each, so at thousands of rows a second the event loop, which
# gives it up at every socket call, may find the writer holding it thousands of times a
# second; one statement of many rows is one step and one hand-off. 500 rows of 24 columns
# stay far below SQLite's 32766 variables.
ROWS_PER_STATEMENT = 500


@functools.lru_cache(maxsize=16)
def _rows_statement(sql: str, rows: int) -> str:
    """``sql`` (an INSERT of one row) made to insert ``rows`` rows."""
    head, values = sql.split(" VALUES ")
    return f"{head} VALUES {','.join([values] * rows)}"


# What one row's values can raise on their way into SQLite: text that is no valid UTF-8
# (a lone surrogate), an integer beyond 64 bits, a value of a type SQLite does not take.
_ROW_ERRORS = (UnicodeError, OverflowError, ValueError, TypeError, sqlite3.InterfaceError,
               sqlite3.IntegrityError, sqlite3.DataError)
UNSTORABLE_LOG_INTERVAL_S = 10.0


def _row(e: Entry) -> tuple[Any, ...]:
    return (e.ts, int(e.ts // 60), e.model, e.version, e.route, e.request_id, e.status,
            e.latency_us, e.queue_us, e.batch_size, e.rows, e.error,
            _tensors_json(e.inputs), _tensors_json(e.outputs),
            None if e.inputs is None else e.weight)


def _llm_row(e: LlmEntry) -> tuple[Any, ...]:
    day = time.strftime("%Y-%m-%d", time.gmtime(e.ts))
    return (e.ts, day, e.model, e.version, e.endpoint, e.request_id, e.status, int(e.stream),
            e.prompt_tokens, e.completion_tokens, e.queue_ms, e.ttft_ms, e.itl_ms, e.e2e_ms,
            e.finish_reason, e.device, e.device_s, e.cost, e.currency, e.error, e.prompt,
            e.completion, e.prompt_ref, e.guardrail)
