"""What the language models served: requests, tokens, latency, device time and cost per
model version and per day, from monitoring.db's per-minute roll-ups (``llm_minutes``, see
``llm_rollup``) and the ``llm_requests`` rows after them; read-only.

So that the time this takes does not grow with the traffic, the rolled-up past is read
from the roll-ups and only the rows not yet rolled up from the log itself, by id; a
``since`` is rounded down to its whole minute. Latency quantiles (time to first token, end
to end) are those of the answered requests (status < 400), as ``traffic`` counts them:
exact while every request of a group is a raw row, from the roll-ups' sketch (within 2%)
once some are rolled up. Errors are the requests answered with a status of 400 or more.
Costs are summed in the currency each request was priced in; a group whose requests were
priced in several currencies has no single ``cost`` (``None``), only ``costs`` per
currency.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import orjson

from appliance.errors import BadInput
from appliance.monitoring.rollup import LLM_STATE_KEY, bucket, last_rolled_id, sketch_quantiles
from appliance.monitoring.traffic import Window
from appliance.storage.db import Database

TABLE = "llm_requests"
DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(m|min|h|d|w)")
UNIT_S = {"m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}
GROUP_COLUMNS = ("status, prompt_tokens, completion_tokens, ttft_ms, e2e_ms, device, device_s,"
                 " cost, currency")  # what _Group.add takes
COLUMNS = f"model, version, day, {GROUP_COLUMNS}"
MINUTES = "llm_minutes"
SUMS = ("device, currency, SUM(requests), SUM(errors), SUM(prompt_tokens),"
        " SUM(completion_tokens), SUM(device_s), SUM(cost)")  # what _Group.add_sums takes


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def since_ts(text: str, now: float | None = None) -> float:
    """``--since`` as Unix seconds: a duration back from now (``90m``, ``24h``, ``7d``,
    ``2w``) or an ISO 8601 time (a date alone is its midnight; no zone is UTC)."""
    now = time.time() if now is None else now
    match = DURATION.fullmatch(text.strip().lower())
    if match:
        amount = float(match.group(1))
        if amount <= 0:
            raise BadInput(f"--since {text!r}: the duration must be more than 0")
        return now - amount * UNIT_S[match.group(2)]
    try:
        datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise BadInput(f"--since {text!r}: expected a duration such as 24h or 7d, or an ISO "
                       "8601 time such as 2026-01-31 or 2026-01-31T09:30:00Z") from exc
    return Window.since(text, now).start


@dataclass
class _Group:
    requests: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    device_s: float = 0.0
    ttft: list[float] = field(default_factory=list)
    e2e: list[float] = field(default_factory=list)
    devices: set[str] = field(default_factory=set)
    costs: dict[str, float] = field(default_factory=dict)
    ttft_sketch: dict[int, int] = field(default_factory=dict)
    e2e_sketch: dict[int, int] = field(default_factory=dict)

    def add_sums(self, row: tuple[Any, ...]) -> None:
        """Add the sums of rows of ``llm_minutes`` (``SUMS``)."""
        device, currency, requests, errors, prompt, completion, device_s, cost = row
        self.requests += int(requests)
        self.errors += int(errors)
        self.prompt_tokens += int(prompt)
        self.completion_tokens += int(completion)
        self.device_s += float(device_s)
        self.devices.add(str(device))
        self.costs[currency] = self.costs.get(currency, 0.0) + float(cost)

    def merge(self, other: _Group) -> None:
        """Add another group (of the same model version: its days make its total)."""
        self.requests += other.requests
        self.errors += other.errors
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.device_s += other.device_s
        self.devices |= other.devices
        for currency, cost in other.costs.items():
            self.costs[currency] = self.costs.get(currency, 0.0) + cost
        self.ttft.extend(other.ttft)
        self.e2e.extend(other.e2e)
        for mine, theirs in ((self.ttft_sketch, other.ttft_sketch),
                             (self.e2e_sketch, other.e2e_sketch)):
            for b, count in theirs.items():
                mine[b] = mine.get(b, 0) + count

    def add(self, row: tuple[Any, ...]) -> None:
        status, prompt, completion, ttft, e2e, device, device_s, cost, currency = row
        self.requests += 1
        self.prompt_tokens += int(prompt)
        self.completion_tokens += int(completion)
        self.device_s += float(device_s)
        self.devices.add(str(device))
        self.costs[currency] = self.costs.get(currency, 0.0) + float(cost)
        if status >= 400:
            self.errors += 1
            return
        if ttft is not None:
            self.ttft.append(float(ttft))
        self.e2e.append(float(e2e))

    def as_dict(self) -> dict[str, Any]:
        single = len(self.costs) == 1
        out: dict[str, Any] = {
            "requests": self.requests, "errors": self.errors,
            "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
            "device": ",".join(sorted(self.devices)), "device_s": round(self.device_s, 6),
            "cost": round(next(iter(self.costs.values())), 9) if single else None,
            "currency": next(iter(self.costs)) if single else ",".join(sorted(self.costs)),
            "costs": {c: round(v, 9) for c, v in sorted(self.costs.items())},
        }
        for name, values, sketch in (("ttft", self.ttft, self.ttft_sketch),
                                     ("e2e", self.e2e, self.e2e_sketch)):
            p50, p95 = _quantiles(values, sketch)
            out[f"{name}_p50_ms"], out[f"{name}_p95_ms"] = p50, p95
        return out


def _rolled(mdb: Database, key: str, where: str,
            args: list[Any]) -> dict[tuple[Any, ...], _Group]:
    """The rows of ``llm_minutes`` that match ``where``, summed per ``key`` (SQL
    expressions, comma-separated): the counts by SQLite, the sketches here, bucket names
    kept as the text they are stored as until the end (the bulk of the work)."""
    n = len(key.split(","))
    by = ", ".join(str(i) for i in range(1, n + 1))
    groups: dict[tuple[Any, ...], _Group] = {}
    for row in mdb.execute(f"SELECT {key}, {SUMS} FROM {MINUTES} WHERE {where}"
                           f" GROUP BY {by}, {n + 1}, {n + 2}", args):
        groups.setdefault(tuple(row[:n]), _Group()).add_sums(tuple(row[n:]))
    sketches: dict[tuple[Any, ...], tuple[dict[str, int], dict[str, int]]] = {}
    for row in mdb.execute(f"SELECT {key}, ttft_sketch, e2e_sketch FROM {MINUTES}"
                           f" WHERE {where}", args):
        ttft, e2e = sketches.setdefault(tuple(row[:n]), ({}, {}))
        for sketch, text in ((ttft, row[n]), (e2e, row[n + 1])):
            get = sketch.get
            for b, count in orjson.loads(text).items():
                sketch[b] = get(b, 0) + count
    for k, (ttft, e2e) in sketches.items():
        groups[k].ttft_sketch = {int(b): c for b, c in ttft.items()}
        groups[k].e2e_sketch = {int(b): c for b, c in e2e.items()}
    return groups


def _quantiles(values: list[float],
               sketch: dict[int, int]) -> tuple[float | None, float | None]:
    """p50 and p95 in ms: exact from raw values alone (numpy's linear interpolation), from
    the sketch with the raw values added to it once some were rolled up (numpy's 'lower'
    rank, within 2%)."""
    if sketch:
        merged = dict(sketch)
        for ms in values:
            b = bucket(ms * 1000.0)
            merged[b] = merged.get(b, 0) + 1
        found = sketch_quantiles(merged, (0.50, 0.95))
        p50_us, p95_us = found[0] or 0.0, found[1] or 0.0
        return round(p50_us / 1000.0, 3), round(p95_us / 1000.0, 3)
    if not values:
        return None, None
    import numpy as np  # here: the usage tables with no rows need none of it

    p50, p95 = np.percentile(np.asarray(values, dtype=np.float64), [50, 95])
    return round(float(p50), 3), round(float(p95), 3)


def has_table(mdb: Database) -> bool:
    return mdb.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                       [TABLE]).fetchone() is not None


def llm_usage(mdb: Database, *, model: str | None = None,
              since: str | None = None, db: Database | None = None,
              now: float | None = None) -> dict[str, Any]:
    """Totals per model version (``versions``) and per model version and UTC day
    (``days``), oldest day first, of the requests since ``since`` (all when None).

    With ``db`` (appliance.db) given, a ``model`` that neither served a request nor is in
    the registry is ``NotFound``; a registered one that served nothing gets a ``note``.
    """
    start = since_ts(since, now) if since is not None else None
    out: dict[str, Any] = {"model": model, "since": None if start is None else _iso(start),
                           "versions": [], "days": [], "note": None}
    if not has_table(mdb):
        out["note"] = ("no language-model requests: this data directory has no log of them yet "
                       "('appliance init' applies the pending migrations)")
        return out
    first = None if start is None else int(start // 60)
    if first is not None:
        out["since"] = _iso(first * 60.0)
    totals: dict[tuple[str, int], _Group] = {}
    days: dict[tuple[str, int, str], _Group] = {}
    last_id = last_rolled_id(mdb, LLM_STATE_KEY)
    if last_id:
        conditions = [(c, v) for c, v in (("model = ?", model), ("minute >= ?", first))
                      if v is not None]
        rolled = _rolled(mdb, "model, version, minute / 1440",
                         " AND ".join(c for c, _ in conditions) or "1",
                         [v for _, v in conditions])
        for (name, version, day_number), g in rolled.items():
            days[(name, int(version), _day(int(day_number)))] = g
    sql, args = _filtered(_raw(COLUMNS, last_id), [
        (_col("model", last_id) + " = ?", model),
        (_col("ts", last_id) + " >= ?", None if first is None else first * 60.0)])
    for name, version, day, *rest in mdb.execute(sql, args):
        days.setdefault((name, int(version), day), _Group()).add(tuple(rest))
    for (name, version, _), g in sorted(days.items()):
        totals.setdefault((name, version), _Group()).merge(g)
    out["versions"] = [{"model": m, "version": v, **g.as_dict()}
                       for (m, v), g in sorted(totals.items())]
    out["days"] = [{"model": m, "version": v, "day": d, **g.as_dict()}
                   for (m, v, d), g in sorted(days.items())]
    if not totals:
        out["note"] = _empty_note(mdb, db, model, out["since"])
    return out


def _filtered(sql: str, conditions: list[tuple[str, Any]]) -> tuple[str, list[Any]]:
    """``sql`` with the conditions whose value is not None ANDed to it (after its own
    WHERE, if it has one), and their values."""
    where = [c for c, v in conditions if v is not None]
    args = [v for _, v in conditions if v is not None]
    if where:
        sql += (" AND " if " WHERE " in sql else " WHERE ") + " AND ".join(where)
    return sql, args


def _raw(columns: str, last_id: int) -> str:
    """SELECT ``columns`` of the request rows not yet rolled up: once a roll-up has been
    done, those after its high-water mark, by id (few), never through another index."""
    if last_id:
        return f"SELECT {columns} FROM {TABLE} WHERE id > {int(last_id)}"
    return f"SELECT {columns} FROM {TABLE}"


def _col(name: str, last_id: int) -> str:
    """A column to filter on: ``+name`` (no index) once the rows are read by id."""
    return f"+{name}" if last_id else name


@lru_cache(maxsize=4096)
def _day(day_number: int) -> str:
    """The UTC date (YYYY-MM-DD) of a day counted from 1970-01-01."""
    return datetime.fromtimestamp(day_number * 86400.0, UTC).strftime("%Y-%m-%d")


def has_prompt_refs(mdb: Database) -> bool:
    """Whether the log names prompts (``llm_requests.prompt_ref``, migration 0014)."""
    return has_table(mdb) and any(
        row[1] == "prompt_ref" for row in mdb.execute(f"PRAGMA table_info({TABLE})"))


def prompt_usage(mdb: Database, *, since: float,
                 refs: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Totals per prompt version (``prompt_ref``, ``NAME@VERSION``) of the language-model
    requests that named a prompt since ``since`` (Unix seconds), ordered by prompt name and
    version; only the versions in ``refs`` when given. Requests that named a model have no
    ``prompt_ref`` and are not counted. The rolled-up past comes from ``llm_minutes``
    (``since`` rounded down to its minute), the rows after the roll-up by id; before any
    roll-up, given ``refs``, the query reads the partial index on ``(prompt_ref, ts)`` one
    range per version."""
    if not has_prompt_refs(mdb):
        return []
    if refs is not None and not refs:
        return []
    first = int(since // 60)
    last_id = last_rolled_id(mdb, LLM_STATE_KEY)
    groups: dict[str, _Group] = {}
    if last_id:
        where = "minute >= ?"
        args: list[Any] = [first]
        if refs is None:
            where += " AND prompt_ref != ''"
        else:
            where += f" AND prompt_ref IN ({', '.join('?' for _ in refs)})"
            args.extend(refs)
        for (ref,), g in _rolled(mdb, "prompt_ref", where, args).items():
            groups[str(ref)] = g
    sql = _raw(f"prompt_ref, {GROUP_COLUMNS}", last_id)
    sql += " AND " if last_id else " WHERE "
    ref_column = _col("prompt_ref", last_id)
    args = []
    if refs is None:
        sql += f"{ref_column} IS NOT NULL"
    else:
        sql += f"{ref_column} IN ({', '.join('?' for _ in refs)})"
        args.extend(refs)
    sql += f" AND {_col('ts', last_id)} >= ?"
    args.append(first * 60.0)
    for ref, *rest in mdb.execute(sql, args):
        groups.setdefault(str(ref), _Group()).add(tuple(rest))
    out = []
    for ref, group in groups.items():
        name, _, version = ref.rpartition("@")
        out.append({"ref": ref, "prompt": name or ref,
                    "version": int(version) if version.isdigit() else None,
                    **group.as_dict()})
    return sorted(out, key=lambda r: (r["prompt"], r["version"] or 0, r["ref"]))


def _empty_note(mdb: Database, db: Database | None,
                model: str | None, since: str | None) -> str:
    when = f" since {since}" if since else ""
    if model is None:
        return f"no language-model requests{when}"
    served = mdb.execute(f"SELECT 1 FROM {TABLE} WHERE model = ? LIMIT 1", [model]).fetchone()
    if served is None and last_rolled_id(mdb, LLM_STATE_KEY):
        served = mdb.execute(f"SELECT 1 FROM {MINUTES} WHERE model = ? LIMIT 1",
                             [model]).fetchone()
    if served is None and db is not None:
        from appliance.registry import model_summary  # only here: it loads the audit log

        model_summary(db, model)  # NotFound: the model does not exist
    return f"model {model} served no language-model requests{when}"
