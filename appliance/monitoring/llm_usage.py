"""What the language models served: requests, tokens, latency, device time and cost per
model version and per day, from monitoring.db's ``llm_requests`` table; read-only.

Latency quantiles (time to first token, end to end) are those of the answered requests
(status < 400), as ``traffic`` counts them; errors are the requests answered with a status
of 400 or more. Costs are summed in the currency each request was priced in; a group whose
requests were priced in several currencies has no single ``cost`` (``None``), only
``costs`` per currency.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from appliance.errors import BadInput
from appliance.monitoring.traffic import Window
from appliance.registry import model_summary
from appliance.storage.db import Database

TABLE = "llm_requests"
DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(m|min|h|d|w)")
UNIT_S = {"m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}
GROUP_COLUMNS = ("status, prompt_tokens, completion_tokens, ttft_ms, e2e_ms, device, device_s,"
                 " cost, currency")  # what _Group.add takes
COLUMNS = f"model, version, day, {GROUP_COLUMNS}"


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
        for name, values in (("ttft", self.ttft), ("e2e", self.e2e)):
            p50, p95 = _quantiles(values)
            out[f"{name}_p50_ms"], out[f"{name}_p95_ms"] = p50, p95
        return out


def _quantiles(values: list[float]) -> tuple[float | None, float | None]:
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
    sql = f"SELECT {COLUMNS} FROM {TABLE}"
    where: list[str] = []
    args: list[Any] = []
    if model is not None:
        where.append("model = ?")
        args.append(model)
    if start is not None:
        where.append("ts >= ?")
        args.append(start)
    if where:
        sql += " WHERE " + " AND ".join(where)
    totals: dict[tuple[str, int], _Group] = {}
    days: dict[tuple[str, int, str], _Group] = {}
    for name, version, day, *rest in mdb.execute(sql, args):
        totals.setdefault((name, int(version)), _Group()).add(tuple(rest))
        days.setdefault((name, int(version), day), _Group()).add(tuple(rest))
    out["versions"] = [{"model": m, "version": v, **g.as_dict()}
                       for (m, v), g in sorted(totals.items())]
    out["days"] = [{"model": m, "version": v, "day": d, **g.as_dict()}
                   for (m, v, d), g in sorted(days.items())]
    if not totals:
        out["note"] = _empty_note(mdb, db, model, out["since"])
    return out


def has_prompt_refs(mdb: Database) -> bool:
    """Whether the log names prompts (``llm_requests.prompt_ref``, migration 0014)."""
    return has_table(mdb) and any(
        row[1] == "prompt_ref" for row in mdb.execute(f"PRAGMA table_info({TABLE})"))


def prompt_usage(mdb: Database, *, since: float,
                 refs: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Totals per prompt version (``prompt_ref``, ``NAME@VERSION``) of the language-model
    requests that named a prompt since ``since`` (Unix seconds), ordered by prompt name and
    version; only the versions in ``refs`` when given. Requests that named a model have no
    ``prompt_ref`` and are not counted. Given ``refs``, the query reads the partial index
    on ``(prompt_ref, ts)`` one range per version, so a page can ask for the last day of a
    large log; without, it reads the requests since ``since`` by time."""
    if not has_prompt_refs(mdb):
        return []
    sql = f"SELECT prompt_ref, {GROUP_COLUMNS} FROM {TABLE}"
    args: list[Any] = []
    if refs is None:
        sql += " WHERE prompt_ref IS NOT NULL"
    elif not refs:
        return []
    else:
        sql += f" WHERE prompt_ref IN ({', '.join('?' for _ in refs)})"
        args.extend(refs)
    sql += " AND ts >= ?"
    args.append(since)
    groups: dict[str, _Group] = {}
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
    if served is None and db is not None:
        model_summary(db, model)  # NotFound: the model does not exist
    return f"model {model} served no language-model requests{when}"
