"""Roll-ups and retention of the language-model request log (``llm_requests``).

``rollup_llm`` merges raw rows, by request id, into per-minute aggregates
(``llm_minutes``) per model, version, prompt version, device and currency: requests,
errors (status >= 400), prompt and completion tokens, device seconds, cost, and
quantile sketches of the answered requests' time to first token and end-to-end latency
(the tabular roll-up's sketch, ``appliance.monitoring.rollup``: within 2%). The
guardrails' verdicts are counted in the same rows (checked, blocked, redacted, flagged,
a request under its strongest action), their triggered checks per minute, stage, check
and action in ``guardrail_check_minutes``, and the ids of the requests with a
triggered verdict in ``guardrail_triggered``.

``prune_llm`` deletes raw rows that are rolled up and older than
``monitoring.retention_days``, as ``rollup.prune`` does for tabular rows; the newest
row stays, so its id is never handed out again.

Readers (``llm_usage``, ``guardrail_verdicts``) add the roll-ups of the past to the raw
rows after ``last_rolled_id(mon, LLM_STATE_KEY)``, read by id.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from appliance.monitoring.guardrail_verdicts import tally
from appliance.monitoring.rollup import (
    CHUNK_IDS,
    DELETE_CHUNK,
    LLM_STATE_KEY,
    RetentionReport,
    bucket,
    last_rolled_id,
    set_mark,
)
from appliance.storage.db import Database, immediate

if TYPE_CHECKING:
    from appliance.config import Config

MINUTES = "llm_minutes"
_KEY = ("model, version, COALESCE(prompt_ref, ''), CAST(ts / 60 AS INTEGER), device,"
        " currency")
_AGGREGATE = (
    f"SELECT {_KEY}, COUNT(*), SUM(status >= 400), SUM(prompt_tokens),"
    " SUM(completion_tokens), SUM(device_s), SUM(cost)"
    " FROM llm_requests WHERE id > ? AND id <= ? GROUP BY 1, 2, 3, 4, 5, 6"
)
_SKETCH = (
    f"SELECT {_KEY}, appliance_bucket({{column}} * 1000.0), COUNT(*) FROM llm_requests"
    " WHERE id > ? AND id <= ? AND status < 400 AND {column} IS NOT NULL"
    " GROUP BY 1, 2, 3, 4, 5, 6, 7"
)
_VERDICTS = (
    f"SELECT id, ts, {_KEY}, guardrail FROM llm_requests"
    " WHERE id > ? AND id <= ? AND guardrail IS NOT NULL"
)
_COUNTS = ("requests", "errors", "prompt_tokens", "completion_tokens", "device_s", "cost",
           "checked", "blocked", "redacted", "flagged")
_COUNTED = {"block": "blocked", "redact": "redacted", "flag": "flagged"}

Key = tuple[str, int, str, int, str, str]  # model, version, prompt_ref, minute, device, currency


@dataclass
class _Minute:
    counts: dict[str, Any] = field(default_factory=lambda: dict.fromkeys(_COUNTS, 0))
    ttft: dict[int, int] = field(default_factory=dict)
    e2e: dict[int, int] = field(default_factory=dict)


def _key(row: Any) -> Key:
    return (str(row[0]), int(row[1]), str(row[2]), int(row[3]), str(row[4]), str(row[5]))


def _tables_exist(mon: Database) -> bool:
    """Whether the log and its roll-ups are there (not in a database short of migrations)."""
    found = {r[0] for r in mon.execute("SELECT name FROM sqlite_master WHERE type = 'table'"
                                       " AND name IN ('llm_requests', 'llm_minutes')")}
    return found == {"llm_requests", MINUTES}


def rollup_llm(mon: Database, report: RetentionReport | None = None, *,
               chunk_ids: int = CHUNK_IDS) -> RetentionReport:
    """Merge every language-model request row not yet rolled up into ``llm_minutes``."""
    report = report or RetentionReport()
    if not _tables_exist(mon):
        return report
    mon.conn.create_function("appliance_bucket", 1, bucket, deterministic=True)
    top = mon.execute("SELECT MAX(id) FROM llm_requests").fetchone()[0]
    last = last_rolled_id(mon, LLM_STATE_KEY)
    while top is not None and last < top:
        upto = min(top, last + chunk_ids)
        with immediate(mon):
            groups: dict[Key, _Minute] = {}
            for row in mon.execute(_AGGREGATE, [last, upto]):
                g = groups.setdefault(_key(row), _Minute())
                for name, value in zip(_COUNTS[:6], row[6:], strict=True):
                    g.counts[name] = value or 0
                report.llm_rolled_rows += int(row[6])
            for column, attr in (("ttft_ms", "ttft"), ("e2e_ms", "e2e")):
                for row in mon.execute(_SKETCH.format(column=column), [last, upto]):
                    getattr(groups[_key(row)], attr)[int(row[6])] = int(row[7])
            checks: dict[tuple[int, str, str, str], int] = {}
            for row in mon.execute(_VERDICTS, [last, upto]):
                found = tally(row[8])
                if found is None:
                    continue
                key = _key(row[2:8])
                counts = groups[key].counts
                counts["checked"] += 1
                if found.action is not None:
                    counts[_COUNTED[found.action]] += 1
                for stage, check, action in found.checks:
                    k = (key[3], stage, check, action)
                    checks[k] = checks.get(k, 0) + 1
                if found.triggered:
                    mon.execute("INSERT OR IGNORE INTO guardrail_triggered (id, ts)"
                                " VALUES (?, ?)", [row[0], row[1]])
            for key, g in groups.items():
                _merge(mon, key, g)
            for (minute, stage, check, action), n in checks.items():
                mon.execute(
                    "INSERT INTO guardrail_check_minutes (minute, stage, check_name, action,"
                    " count) VALUES (?, ?, ?, ?, ?) ON CONFLICT (minute, stage, check_name,"
                    " action) DO UPDATE SET count = count + excluded.count",
                    [minute, stage, check, action, n])
            set_mark(mon, LLM_STATE_KEY, upto)
            report.llm_minutes_written += len(groups)
        last = upto
    report.llm_last_id = last
    return report


def _sketch_text(sketch: dict[int, int]) -> str:
    return orjson.dumps({str(b): c for b, c in sorted(sketch.items())}).decode()


def add_sketch(into: dict[int, int], text: str) -> None:
    """Add a stored sketch (JSON ``{bucket: count}``) to ``into``."""
    for b, count in orjson.loads(text).items():
        into[int(b)] = into.get(int(b), 0) + int(count)


def _merge(mon: Database, key: Key, g: _Minute) -> None:
    old = mon.execute(
        f"SELECT {', '.join(_COUNTS)}, ttft_sketch, e2e_sketch FROM {MINUTES} WHERE model = ?"
        " AND version = ? AND prompt_ref = ? AND minute = ? AND device = ? AND currency = ?",
        list(key)).fetchone()
    if old is not None:
        for i, name in enumerate(_COUNTS):
            g.counts[name] += old[i]
        add_sketch(g.ttft, old[len(_COUNTS)])
        add_sketch(g.e2e, old[len(_COUNTS) + 1])
    mon.execute(
        f"INSERT OR REPLACE INTO {MINUTES} (model, version, prompt_ref, minute, device,"
        f" currency, {', '.join(_COUNTS)}, ttft_sketch, e2e_sketch) VALUES"
        f" ({', '.join('?' for _ in range(len(key) + len(_COUNTS) + 2))})",
        [*key, *(g.counts[n] for n in _COUNTS), _sketch_text(g.ttft), _sketch_text(g.e2e)])


def prune_llm(mon: Database, config: Config, *, now: float | None = None,
              report: RetentionReport | None = None) -> RetentionReport:
    """Delete rolled-up language-model request rows past ``monitoring.retention_days``
    (0 keeps them forever), with their entries in ``guardrail_triggered``."""
    report = report or RetentionReport()
    days = float(config["monitoring.retention_days"])
    if days <= 0 or not _tables_exist(mon):
        return report
    cutoff = (time.time() if now is None else now) - days * 86400.0
    last = last_rolled_id(mon, LLM_STATE_KEY)
    top = mon.execute("SELECT MAX(id) FROM llm_requests").fetchone()[0] or 0
    keep_below = min(last + 1, top)  # never the newest row: its id must not come back
    while True:
        with immediate(mon):
            cur = mon.execute(
                "DELETE FROM llm_requests WHERE id IN (SELECT id FROM llm_requests WHERE"
                " ts < ? AND id < ? LIMIT ?)", [cutoff, keep_below, DELETE_CHUNK])
            mon.execute("DELETE FROM guardrail_triggered WHERE id IN (SELECT id FROM"
                        " guardrail_triggered WHERE ts < ? AND id < ? LIMIT ?)",
                        [cutoff, keep_below, DELETE_CHUNK])
        report.llm_deleted_rows += cur.rowcount
        if cur.rowcount < DELETE_CHUNK:
            break
    return report
