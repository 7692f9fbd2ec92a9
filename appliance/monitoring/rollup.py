"""Roll-ups and retention of the request log: what lets monitoring.db run for years.

``rollup`` merges raw ``requests`` rows, by request id, into per-minute
aggregates (``request_minutes``): counts, rows, client errors and failures,
latency sums, a latency quantile sketch, queue time and batch sizes, per model,
version and route. The sketch is a DDSketch-style histogram: an answered
request's latency in microseconds goes to bucket ``ceil(ln(us) / ln(GAMMA))``,
and a quantile read back from it is within ``(GAMMA - 1) / (GAMMA + 1)``
(2%) of the true value. Sketches merge by adding counts, so minutes add up to
hours and versions to models without the raw rows.

Language-model requests are rolled up the same way into ``llm_minutes``
(``appliance.monitoring.llm_rollup``), by the same ``run_retention``.

``prune`` then deletes raw rows that are rolled up and older than
``monitoring.retention_days``, and empties the kept inputs and outputs of rows
older than ``monitoring.input_retention_days`` (drift and quality read those), and
the prompts and answers of language-model requests (``llm.log_text``) of that age.
The newest request row is never deleted, so SQLite never hands its id out
again and the roll-up's high-water mark stays true. Deletion goes in chunks,
each its own short transaction, so that the serving daemon's writer never
waits long.
"""

from __future__ import annotations

import itertools
import json
import math
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from appliance.storage.db import Database, immediate

if TYPE_CHECKING:
    from appliance.config import Config

GAMMA = 1.04
_LOG_GAMMA = math.log(GAMMA)
STATE_KEY = "rollup.last_id"
LLM_STATE_KEY = "llm_rollup.last_id"  # language-model request ids in llm_minutes
INPUTS_KEY = "inputs.emptied_before_minute"
CHUNK_IDS = 200_000
DELETE_CHUNK = 50_000


def bucket(latency_us: float | None) -> int:
    """The sketch bucket of a latency in microseconds (0 for anything under 1 us)."""
    if latency_us is None or latency_us <= 1:
        return 0
    return int(math.ceil(math.log(latency_us) / _LOG_GAMMA))


def bucket_value(index: int) -> float:
    """The value a bucket stands for, in microseconds: the one with the least relative
    error for anything in it."""
    if index <= 0:
        return 1.0
    return 2.0 * GAMMA ** index / (GAMMA + 1.0)


def sketch_quantiles(sketch: dict[int, int], qs: tuple[float, ...]) -> list[float | None]:
    """Quantiles (as numpy's 'lower' rank) of a sketch, in microseconds; ``qs`` ascending."""
    total = sum(sketch.values())
    if not total or not qs:
        return [None for _ in qs]
    ranks = iter([q * (total - 1) for q in qs])
    rank = next(ranks)
    out: list[float | None] = []
    keys = sorted(sketch)
    for k, seen in zip(keys, itertools.accumulate(map(sketch.__getitem__, keys)),
                       strict=True):
        while seen > rank:
            out.append(bucket_value(k))
            following = next(ranks, None)
            if following is None:
                return out
            rank = following
    return out


def last_rolled_id(mon: Database, key: str = STATE_KEY) -> int:
    """Request ids up to this one are in ``request_minutes`` (with ``key`` =
    ``LLM_STATE_KEY``: language-model request ids in ``llm_minutes``)."""
    return mark(mon, key)


def mark(mon: Database, key: str) -> int:
    """A mark of ``rollup_state``; 0 before the pass that moves it first ran."""
    row = mon.execute("SELECT value FROM rollup_state WHERE key = ?", [key]).fetchone()
    return int(row[0]) if row else 0


def set_mark(mon: Database, key: str, value: int) -> None:
    """Move a mark of ``rollup_state`` (in the caller's transaction)."""
    mon.execute("INSERT INTO rollup_state (key, value) VALUES (?, ?) ON CONFLICT (key)"
                " DO UPDATE SET value = excluded.value", [key, value])


@dataclass
class RetentionReport:
    rolled_rows: int = 0
    minutes_written: int = 0
    deleted_rows: int = 0
    emptied_inputs: int = 0
    emptied_texts: int = 0  # language-model prompts and answers
    last_id: int = 0
    llm_rolled_rows: int = 0  # language-model request rows, into llm_minutes
    llm_minutes_written: int = 0
    llm_deleted_rows: int = 0
    llm_last_id: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


_AGGREGATE = (
    "SELECT model, version, CASE WHEN route = 'shadow' THEN 'shadow' ELSE 'live' END,"
    " minute, COUNT(*), SUM(rows), SUM(status >= 400 AND status < 500), SUM(status >= 500),"
    " SUM(status < 400), SUM(CASE WHEN status < 400 THEN latency_us ELSE 0 END),"
    " MAX(CASE WHEN status < 400 THEN latency_us ELSE 0 END), SUM(queue_us),"
    " SUM(batch_size), MAX(batch_size)"
    " FROM requests WHERE id > ? AND id <= ? GROUP BY 1, 2, 3, 4"
)
_SKETCH = (
    "SELECT model, version, CASE WHEN route = 'shadow' THEN 'shadow' ELSE 'live' END,"
    " minute, appliance_bucket(latency_us), COUNT(*)"
    " FROM requests WHERE id > ? AND id <= ? AND status < 400 GROUP BY 1, 2, 3, 4, 5"
)
_FIELDS = ("requests", "rows", "client_errors", "failures", "ok", "latency_us_sum",
           "latency_us_max", "queue_us_sum", "batch_size_sum", "batch_size_max")


def rollup(mon: Database, *, chunk_ids: int = CHUNK_IDS) -> RetentionReport:
    """Merge every request row not yet rolled up into ``request_minutes``."""
    report = RetentionReport()
    mon.conn.create_function("appliance_bucket", 1, bucket, deterministic=True)
    top = mon.execute("SELECT MAX(id) FROM requests").fetchone()[0]
    last = last_rolled_id(mon)
    if top is None or top <= last:
        report.last_id = last
        return report
    while last < top:
        upto = min(top, last + chunk_ids)
        with immediate(mon):
            groups: dict[tuple[str, int, str, int], dict[str, Any]] = {}
            for row in mon.execute(_AGGREGATE, [last, upto]):
                key = (row[0], int(row[1]), row[2], int(row[3]))
                groups[key] = {**dict(zip(_FIELDS, (int(v or 0) for v in row[4:]), strict=True)),
                               "sketch": {}}
                report.rolled_rows += int(row[4])
            for model, version, route, minute, b, count in mon.execute(_SKETCH, [last, upto]):
                groups[(model, int(version), route, int(minute))]["sketch"][int(b)] = int(count)
            for key, g in groups.items():
                _merge(mon, key, g)
            set_mark(mon, STATE_KEY, upto)
            report.minutes_written += len(groups)
        last = upto
    report.last_id = last
    return report


def _merge(mon: Database, key: tuple[str, int, str, int],
           g: dict[str, Any]) -> None:
    old = mon.execute(
        "SELECT requests, rows, client_errors, failures, ok, latency_us_sum, latency_us_max,"
        " queue_us_sum, batch_size_sum, batch_size_max, sketch FROM request_minutes"
        " WHERE model = ? AND version = ? AND route = ? AND minute = ?", list(key)).fetchone()
    if old is not None:
        for i, name in enumerate(_FIELDS):
            g[name] = max(g[name], old[i]) if name.endswith("_max") else g[name] + old[i]
        for b, count in json.loads(old[10]).items():
            g["sketch"][int(b)] = g["sketch"].get(int(b), 0) + int(count)
    sketch = json.dumps({str(b): c for b, c in sorted(g["sketch"].items())},
                        separators=(",", ":"))
    mon.execute(
        "INSERT OR REPLACE INTO request_minutes (model, version, route, minute, "
        + ", ".join(_FIELDS) + ", sketch) VALUES (?, ?, ?, ?, "
        + ", ".join("?" for _ in _FIELDS) + ", ?)",
        [*key, *(g[name] for name in _FIELDS), sketch])


def prune(mon: Database, config: Config, *, now: float | None = None,
          report: RetentionReport | None = None) -> RetentionReport:
    """Delete rolled-up raw rows past ``monitoring.retention_days`` and empty the inputs
    and outputs of rows past ``monitoring.input_retention_days`` (0 keeps them forever)."""
    report = report or RetentionReport()
    now = time.time() if now is None else now
    last = last_rolled_id(mon)
    top = mon.execute("SELECT MAX(id) FROM requests").fetchone()[0] or 0
    keep_below = min(last + 1, top)  # never the newest row: its id must not come back
    days = float(config["monitoring.retention_days"])
    if days > 0:
        cutoff = int((now - days * 86400.0) // 60)  # whole minutes, through the minute index
        while True:
            with immediate(mon):
                cur = mon.execute(
                    "DELETE FROM requests WHERE id IN (SELECT id FROM requests WHERE"
                    " minute < ? AND id < ? LIMIT ?)", [cutoff, keep_below, DELETE_CHUNK])
            report.deleted_rows += cur.rowcount
            if cur.rowcount < DELETE_CHUNK:
                break
    input_days = float(config["monitoring.input_retention_days"])
    if input_days > 0:
        cutoff = int((now - input_days * 86400.0) // 60)
        # Minutes before this one were emptied by an earlier pass: not scanned again.
        done = mark(mon, INPUTS_KEY)  # a minute
        if not done:
            first = mon.execute("SELECT MIN(minute) FROM requests").fetchone()[0]
            done = int(first) if first is not None else cutoff
        while done < cutoff:
            upto = min(cutoff, done + 60)  # an hour a transaction
            with immediate(mon):
                cur = mon.execute(
                    "UPDATE requests SET inputs = NULL, outputs = NULL WHERE minute >= ?"
                    " AND minute < ? AND (inputs IS NOT NULL OR outputs IS NOT NULL)",
                    [done, upto])
                set_mark(mon, INPUTS_KEY, upto)
            report.emptied_inputs += cur.rowcount
            done = upto
        # Language-model prompts and answers (kept with llm.log_text) go at the same age.
        if mon.execute("SELECT 1 FROM sqlite_master WHERE name = 'llm_requests'").fetchone():
            with immediate(mon):
                cur = mon.execute(
                    "UPDATE llm_requests SET prompt = NULL, completion = NULL WHERE ts < ?"
                    " AND (prompt IS NOT NULL OR completion IS NOT NULL)",
                    [now - input_days * 86400.0])
            report.emptied_texts += cur.rowcount
    return report


def run_retention(mon: Database, config: Config, *,
                  now: float | None = None) -> RetentionReport:
    """Roll up, then prune, the tabular and the language-model request logs: what the
    scheduler, the retention job and the command run."""
    from appliance.monitoring import llm_rollup  # it builds on this module

    started = time.perf_counter()
    report = rollup(mon)
    llm_rollup.rollup_llm(mon, report)
    prune(mon, config, now=now, report=report)
    llm_rollup.prune_llm(mon, config, now=now, report=report)
    if report.deleted_rows or report.emptied_inputs or report.llm_deleted_rows:
        # Give the WAL back to the file system instead of leaving it at its largest.
        mon.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    report.seconds = time.perf_counter() - started
    return report
