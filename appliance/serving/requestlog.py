"""The request log: rows for monitoring.db, written off the request path.

The event loop appends a tuple to a bounded in-memory queue and moves on; a
background thread takes everything queued every ``flush_interval`` seconds
(or sooner when many rows wait) and inserts it in one transaction. When the
queue is full, or a write fails, rows are dropped and counted, never waited
for: serving must not slow down because the disk did. A row the database can
not take (a value no request should carry) is dropped, counted and logged on
its own; the rows beside it are written and the thread goes on.
"""

from __future__ import annotations

import collections
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from appliance.errors import StorageError
from appliance.serving.metrics import Metrics
from appliance.storage.db import Database, immediate

log = logging.getLogger("appliance.serving")

COLUMNS = ("ts", "minute", "model", "version", "route", "request_id", "status", "latency_us",
           "queue_us", "batch_size", "rows", "error", "inputs", "outputs")
_INSERT = (f"INSERT INTO requests ({', '.join(COLUMNS)}) "
           f"VALUES ({', '.join('?' for _ in COLUMNS)})")


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
    inputs: Mapping[str, np.ndarray] | None = None  # only when sampled
    outputs: Mapping[str, np.ndarray] | None = None


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


def _tensors_json(tensors: Mapping[str, np.ndarray] | None) -> str | None:
    if tensors is None:
        return None
    return json.dumps(
        {k: (v.tolist() if v.dtype != object else [str(x) for x in v.ravel()])
         for k, v in tensors.items()},
        separators=(",", ":"),
    )


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
                    db.conn.executemany(sql, batch)
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


# What one row's values can raise on their way into SQLite: text that is no valid UTF-8
# (a lone surrogate), an integer beyond 64 bits, a value of a type SQLite does not take.
_ROW_ERRORS = (UnicodeError, OverflowError, ValueError, TypeError, sqlite3.InterfaceError,
               sqlite3.IntegrityError, sqlite3.DataError)
UNSTORABLE_LOG_INTERVAL_S = 10.0


def _row(e: Entry) -> tuple[Any, ...]:
    return (e.ts, int(e.ts // 60), e.model, e.version, e.route, e.request_id, e.status,
            e.latency_us, e.queue_us, e.batch_size, e.rows, e.error,
            _tensors_json(e.inputs), _tensors_json(e.outputs))


def _llm_row(e: LlmEntry) -> tuple[Any, ...]:
    day = time.strftime("%Y-%m-%d", time.gmtime(e.ts))
    return (e.ts, day, e.model, e.version, e.endpoint, e.request_id, e.status, int(e.stream),
            e.prompt_tokens, e.completion_tokens, e.queue_ms, e.ttft_ms, e.itl_ms, e.e2e_ms,
            e.finish_reason, e.device, e.device_s, e.cost, e.currency, e.error, e.prompt,
            e.completion, e.prompt_ref, e.guardrail)
