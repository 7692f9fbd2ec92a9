"""What the request log says about a model: traffic, errors and latency per minute, and the
kept inputs and outputs of a window.

The serving daemon writes one row per answered request to monitoring.db's
``requests`` table and keeps the inputs and outputs of every request up to
``serving.log_rows_per_second`` rows a second per version, then of a uniform sample,
each kept row carrying ``weight`` = 1 / its chance of being kept. Everything here
reads that table through its ``(model, version, minute)`` index; nothing is written.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson

from appliance.errors import BadInput
from appliance.monitoring.rollup import bucket, last_rolled_id, sketch_quantiles
from appliance.storage.db import Database

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True)
class Window:
    """A half-open time range [start, end) in Unix seconds."""

    start: float
    end: float

    @classmethod
    def last(cls, minutes: float, now: float | None = None) -> Window:
        if minutes <= 0:
            raise BadInput(f"--window {minutes}: expected a number of minutes > 0")
        end = time.time() if now is None else now
        return cls(end - minutes * 60.0, end + 1e-6)

    @classmethod
    def since(cls, iso: str, now: float | None = None) -> Window:
        try:
            moment = datetime.fromisoformat(iso.strip().replace("Z", "+00:00"))
        except ValueError as exc:
            raise BadInput(f"--since {iso!r}: expected an ISO 8601 time such as "
                           "2024-05-01T12:00:00Z") from exc
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        end = time.time() if now is None else now
        start = moment.timestamp()
        if start >= end:
            raise BadInput(f"--since {iso}: the time is not in the past")
        return cls(start, end + 1e-6)

    def as_dict(self) -> dict[str, Any]:
        return {"start": _iso(self.start), "end": _iso(self.end),
                "minutes": round((self.end - self.start) / 60.0, 3)}


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _percentiles(latencies_us: list[int],
                 sketch: dict[int, int] | None = None) -> dict[str, float | None]:
    """p50/p95/p99 in ms: exact from raw latencies alone; from the sketch (within 2%) once
    some of them were rolled up, the raw ones added to it."""
    if sketch:
        merged = dict(sketch)
        for us in latencies_us:
            b = bucket(us)
            merged[b] = merged.get(b, 0) + 1
        values = sketch_quantiles(merged, (0.50, 0.95, 0.99))
        return {k: (None if v is None else v / 1000.0)
                for k, v in zip(("p50_ms", "p95_ms", "p99_ms"), values, strict=True)}
    if not latencies_us:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None}
    import numpy as np  # here, so listing alerts or usage does not load it

    arr = np.asarray(latencies_us, dtype=np.float64) / 1000.0
    p50, p95, p99 = np.percentile(arr, [50, 95, 99])
    return {"p50_ms": float(p50), "p95_ms": float(p95), "p99_ms": float(p99)}


def _group() -> dict[str, Any]:
    return {"requests": 0, "rows": 0, "client_errors": 0, "failures": 0, "latencies": [],
            "sketch": {}}


def raw_rows_sql(columns: str, last_id: int) -> str:
    """SELECT ``columns`` of the request rows not yet rolled up, of one model in a window
    (parameters: model, first minute, last minute, start, end). With a roll-up done, the
    rows after its high-water mark are read by id (few), not through the model's index
    (every row of the window, rolled up or not)."""
    if last_id:
        return (f"SELECT {columns} FROM requests WHERE id > {int(last_id)} AND +model = ?"
                " AND +minute >= ? AND +minute <= ? AND ts >= ? AND ts < ?")
    return (f"SELECT {columns} FROM requests"
            " WHERE model = ? AND minute >= ? AND minute <= ? AND ts >= ? AND ts < ?")


def traffic(mon: Database, model: str, window: Window, *,
            version: int | None = None, by_minute: bool = True) -> list[dict[str, Any]]:
    """Requests, rows, client errors (4xx), failures (5xx) and latency percentiles, one entry
    per version and minute (or per version over the whole window with ``by_minute=False``).

    Rolled-up minutes come from ``request_minutes`` (whole minutes: the window is rounded
    out to them), the rows after the roll-up from the request log itself, so the time this
    takes grows with the window, not with the traffic in it.
    Shadow copies are counted under their own route and never mixed with answered traffic.
    """
    last_id = last_rolled_id(mon)
    first, last = int(window.start // 60), int(window.end // 60)
    groups: dict[tuple[int, int, str], dict[str, Any]] = {}
    if last_id:
        sql = ("SELECT version, minute, route, requests, rows, client_errors, failures, sketch"
               " FROM request_minutes WHERE model = ? AND minute >= ? AND minute <= ?")
        agg_args: list[Any] = [model, first, last]
        if version is not None:
            sql += " AND version = ?"
            agg_args.append(version)
        for ver, minute, route, requests, rows, client, failures, sketch in mon.execute(
                sql, agg_args):
            g = groups.setdefault((int(ver), int(minute) if by_minute else 0, route), _group())
            g["requests"] += requests
            g["rows"] += rows
            g["client_errors"] += client
            g["failures"] += failures
            parsed = orjson.loads(sketch)
            if not g["sketch"]:
                g["sketch"] = dict(zip(map(int, parsed), parsed.values(), strict=True))
                continue
            merged = g["sketch"]
            for b, count in parsed.items():
                merged[int(b)] = merged.get(int(b), 0) + count
    sql = raw_rows_sql("version, minute, route, status, latency_us, rows", last_id)
    args: list[Any] = [model, first, last, window.start, window.end]
    if version is not None:
        sql += " AND version = ?"
        args.append(version)
    for ver, minute, route, status, latency, rows in mon.execute(sql, args):
        key = (int(ver), int(minute) if by_minute else 0, "shadow" if route == "shadow" else "live")
        g = groups.setdefault(key, _group())
        g["requests"] += 1
        g["rows"] += int(rows)
        if 400 <= status < 500:
            g["client_errors"] += 1
        elif status >= 500:
            g["failures"] += 1
        if status < 400:
            g["latencies"].append(int(latency))
    out = []
    for (ver, minute, route), g in sorted(groups.items()):
        entry: dict[str, Any] = {"version": ver, "route": route, "requests": g["requests"],
                                 "rows": g["rows"], "client_errors": g["client_errors"],
                                 "failures": g["failures"],
                                 "error_rate": g["failures"] / g["requests"]}
        if by_minute:
            entry["minute"] = _iso(minute * 60.0)
        entry.update(_percentiles(g.pop("latencies"), g.pop("sketch")))
        out.append(entry)
    return out


def served_models(mon: Database) -> list[dict[str, Any]]:
    """Every model in the request log with its request count and last request time, from
    the roll-ups and the rows after them."""
    last_id = last_rolled_id(mon)
    found: dict[str, dict[str, Any]] = {}
    for model, requests, last_minute in mon.execute(
            "SELECT model, SUM(requests), MAX(minute) FROM request_minutes GROUP BY model"):
        found[model] = {"model": model, "requests": int(requests),
                        "last_ts": float(last_minute * 60 + 59)}
    for model, requests, last_ts in mon.execute(
            # NOT INDEXED: through the rowid (the rows after the roll-up), never a walk of
            # the model index for its grouping, which reads every row ever logged.
            "SELECT model, COUNT(*), MAX(ts) FROM requests NOT INDEXED WHERE id > ?"
            " GROUP BY model", [last_id]):
        entry = found.setdefault(model, {"model": model, "requests": 0, "last_ts": 0.0})
        entry["requests"] += int(requests)
        entry["last_ts"] = max(entry["last_ts"], float(last_ts))
    return [found[m] for m in sorted(found)]


@dataclass
class Samples:
    """The kept rows of a window, laid out as columns (one value per row), each with the
    weight of its request (1 / the chance it had of being kept)."""

    request_ids: list[str | None]
    row_index: list[int]  # row within its request
    ts: np.ndarray
    versions: np.ndarray
    inputs: dict[str, list[Any]]  # feature -> values (float, str or None)
    outputs: dict[str, list[Any]]  # output -> per-row value (list for probabilities)
    malformed: int  # kept requests whose stored tensors could not be read
    weights: np.ndarray  # per row, float64
    requests: int = 0  # kept requests the rows came from
    represented: float = 0.0  # the requests they stand for: the sum of their weights

    @property
    def rows(self) -> int:
        return len(self.row_index)

    @property
    def weighted(self) -> bool:
        """Whether any row stands for more than itself (it was kept beyond the limit)."""
        return bool(len(self.weights)) and bool((self.weights != 1.0).any())


def _rows_of(value: Any) -> list[Any]:
    """One entry per request row from a stored tensor: [[v], [v]] or [v, v] or [[p0, p1], ...]."""
    if not isinstance(value, list):
        return [value]
    return [v[0] if isinstance(v, list) and len(v) == 1 else v for v in value]


def samples(mon: Database, model: str, window: Window, *,
            version: int | None = None, live_only: bool = True,
            limit: int | None = None) -> Samples:
    """Every kept, answered row of ``model`` in the window, oldest first.

    ``live_only`` leaves out shadow copies, whose outputs nobody received. With ``limit``
    (and ``version``), only the newest ``limit`` such requests of the window, read newest
    first through the ``requests_kept`` index: what a page shows, in a time that does not
    grow with the window's traffic.
    """
    import numpy as np

    sql = ("SELECT ts, version, request_id, inputs, outputs, COALESCE(weight, 1.0)"
           " FROM requests"
           " WHERE model = ? AND minute >= ? AND minute <= ? AND ts >= ? AND ts < ?"
           " AND status < 400 AND inputs IS NOT NULL")
    args: list[Any] = [model, int(window.start // 60), int(window.end // 60), window.start,
                       window.end]
    if version is not None:
        sql += " AND version = ?"
        args.append(version)
    if live_only:
        sql += " AND route != 'shadow'"
    if limit is not None:
        head, where = sql.split(" WHERE ", 1)
        sql = (f"{head} WHERE id IN (SELECT id FROM requests WHERE {where}"
               f" ORDER BY minute DESC, id DESC LIMIT {int(limit)})")
    sql += " ORDER BY ts, id"
    ids: list[str | None] = []
    index: list[int] = []
    ts: list[float] = []
    versions: list[int] = []
    inputs: dict[str, list[Any]] = {}
    outputs: dict[str, list[Any]] = {}
    weights: list[float] = []
    malformed = 0
    requests = 0
    represented = 0.0
    for t, ver, request_id, in_text, out_text, weight in mon.execute(sql, args):
        try:
            tensors = json.loads(in_text)
            outs = json.loads(out_text) if out_text else {}
        except ValueError:
            malformed += 1
            continue
        if not isinstance(tensors, dict) or not tensors:
            malformed += 1
            continue
        per_input = {k: _rows_of(v) for k, v in tensors.items()}
        n = max(len(v) for v in per_input.values())
        per_output = {k: _rows_of(v) for k, v in outs.items()} if isinstance(outs, dict) else {}
        start = len(index)
        for name, values in per_input.items():
            column = inputs.setdefault(name, [None] * start)
            column.extend(values[:n] + [None] * (n - len(values)))
        for name, values in per_output.items():
            column = outputs.setdefault(name, [None] * start)
            column.extend(values[:n] + [None] * (n - len(values)))
        ids.extend([request_id] * n)
        index.extend(range(n))
        ts.extend([float(t)] * n)
        versions.extend([int(ver)] * n)
        weights.extend([float(weight)] * n)
        requests += 1
        represented += float(weight)
        for column in (*inputs.values(), *outputs.values()):
            column.extend([None] * (len(index) - len(column)))
    return Samples(ids, index, np.asarray(ts), np.asarray(versions, dtype=np.int64), inputs,
                   outputs, malformed, np.asarray(weights, dtype=np.float64), requests,
                   represented)


def as_float(values: list[Any]) -> tuple[np.ndarray, int]:
    """Numbers as float64 with NaN for missing; also how many values were not numbers."""
    import numpy as np

    out = np.empty(len(values), dtype=np.float64)
    bad = 0
    for i, v in enumerate(values):
        if v is None:
            out[i] = math.nan
        elif isinstance(v, bool):
            out[i] = float(v)
        elif isinstance(v, (int, float)):
            out[i] = float(v)
        else:
            out[i] = math.nan
            bad += 1
    return out, bad
