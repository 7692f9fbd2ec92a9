"""What the guardrails decided: the verdicts the serving daemon keeps in monitoring.db's
``llm_requests.guardrail`` (JSON, one entry per stage; see docs/guardrails.md), counted
over time, per check and action, per model version and prompt version; read-only.

A request counts once under its strongest action over both stages (block > redact >
flag); a request without verdicts (guardrails off, or a log older than them) is not
counted as checked. A database without the ``guardrail`` column reads as empty.

The rolled-up past is counted from the per-minute roll-ups (``llm_minutes``,
``guardrail_check_minutes``; see ``llm_rollup``) and only the rows not yet rolled up are
read from the log itself, by id, so the time this takes does not grow with the traffic;
the period is rounded out to whole minutes. The last triggered verdicts are found through
``guardrail_triggered`` and are those whose rows the retention has not yet deleted.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from appliance.errors import NotFound
from appliance.monitoring.rollup import LLM_STATE_KEY, last_rolled_id
from appliance.registry import resolve
from appliance.storage.db import Database

TABLE = "llm_requests"
ACTIONS = ("block", "redact", "flag")
RECENT = 50
DETAIL_CHARS = 240
HOURLY_UP_TO_S = 3 * 86400.0  # longer ranges are counted per day


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _short(text: str, limit: int = DETAIL_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _counts() -> dict[str, int]:
    return {"checked": 0, "blocked": 0, "redacted": 0, "flagged": 0}


def _strongest(actions: list[str | None]) -> str | None:
    return next((a for a in ACTIONS if a in actions), None)


def _verdicts(raw: str | None) -> list[dict[str, Any]]:
    try:
        value = json.loads(raw) if raw else []
    except ValueError:
        return []
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _counted(action: str | None) -> str | None:
    """The counter a request's strongest action goes to (besides ``checked``)."""
    return None if action is None else {"block": "blocked", "redact": "redacted",
                                        "flag": "flagged"}[action]


@dataclass
class Tally:
    """What one request's verdicts count for: its strongest action, its triggered checks
    as (stage, check, action), and the verdicts that triggered, in stage order."""

    action: str | None
    checks: list[tuple[str, str, str]]
    triggered: list[dict[str, Any]]


def tally(raw: str | None) -> Tally | None:
    """The tally of one request's stored verdicts (None: it has none, or none readable)."""
    verdicts = _verdicts(raw)
    if not verdicts:
        return None
    checks: list[tuple[str, str, str]] = []
    for v in verdicts:
        stage = str(v.get("stage") or "?")
        for r in v.get("results") or ():
            if isinstance(r, dict) and r.get("triggered", True):
                checks.append((stage, str(r.get("check", "?")), str(r.get("action") or "none")))
    return Tally(_strongest([v.get("action") for v in verdicts]), checks,
                 [v for v in verdicts if v.get("triggered")])


def _detail(verdict: dict[str, Any]) -> str:
    parts = []
    for r in verdict.get("results") or ():
        if not isinstance(r, dict):
            continue
        score = r.get("score")
        text = f"{r.get('check', '?')}: {r.get('detail') or ''}".rstrip(": ")
        if isinstance(score, (int, float)):
            text += f" (score {score:.3g})"
        parts.append(text)
    parts.extend(str(n) for n in verdict.get("notes") or ())
    return _short("; ".join(parts))


def summary(mdb: Database, since: float, until: float | None = None) -> dict[str, Any]:
    """The verdicts of the requests that ended in [since, until), rounded out to whole
    minutes: totals, per hour (per day over three days), per stage, check and action, per model version and per prompt
    version, and the last 50 triggered verdicts, newest first."""
    until = time.time() if until is None else until
    bucket_s = 3600.0 if until - since <= HOURLY_UP_TO_S else 86400.0
    out: dict[str, Any] = {
        "since": _iso(since), "until": _iso(until),
        "bucket": "hour" if bucket_s == 3600.0 else "day", "totals": _counts(),
        "buckets": [], "checks": [], "models": [], "prompts": [], "recent": [], "note": "",
    }
    columns = mdb[TABLE].columns_dict if mdb[TABLE].exists() else {}
    if "guardrail" not in columns:
        out["note"] = "the request log has no guardrail verdicts (an older database)"
        return out
    prompt = "prompt_ref" if "prompt_ref" in columns else "NULL"
    first, last_minute = int(since // 60), int(until // 60)
    buckets: dict[float, dict[str, int]] = {}
    checks: dict[tuple[str, str, str], int] = {}
    models: dict[tuple[str, int], dict[str, int]] = {}
    prompts: dict[str, dict[str, int]] = {}

    def count(minute: int, model: str, version: int, prompt_ref: str | None,
              add: dict[str, int]) -> None:
        start = (minute * 60 // bucket_s) * bucket_s
        targets = [out["totals"], buckets.setdefault(start, _counts()),
                   models.setdefault((model, int(version)), _counts())]
        if prompt_ref:
            targets.append(prompts.setdefault(prompt_ref, _counts()))
        for counts in targets:
            for name, n in add.items():
                counts[name] += n

    last_id = last_rolled_id(mdb, LLM_STATE_KEY)
    triggered: list[tuple[Any, ...]] = []  # rows whose verdicts triggered, for ``recent``
    if last_id:
        for model, version, prompt_ref, minute, *numbers in mdb.execute(
                "SELECT model, version, prompt_ref, minute, checked, blocked, redacted, flagged"
                " FROM llm_minutes WHERE minute >= ? AND minute <= ? AND checked > 0",
                [first, last_minute]):
            count(minute, model, version, prompt_ref,
                  dict(zip(("checked", "blocked", "redacted", "flagged"), numbers, strict=True)))
        for stage, check, action, n in mdb.execute(
                "SELECT stage, check_name, action, SUM(count) FROM guardrail_check_minutes"
                " WHERE minute >= ? AND minute <= ? GROUP BY 1, 2, 3", [first, last_minute]):
            checks[(stage, check, action)] = int(n)
        # The newest requests with a triggered verdict, found through their own index.
        triggered = mdb.execute(
            f"SELECT id, ts, model, version, {prompt}, finish_reason, guardrail FROM {TABLE}"
            " WHERE id IN (SELECT id FROM guardrail_triggered WHERE ts >= ? AND ts < ?"
            f" ORDER BY ts DESC, id DESC LIMIT {RECENT})",
            [first * 60.0, (last_minute + 1) * 60.0]).fetchall()
    where = (f"id > {int(last_id)} AND +ts >= ? AND +ts < ?" if last_id
             else "ts >= ? AND ts < ?")  # once rolled up: the rows after it, by id
    for row in mdb.execute(
            f"SELECT id, ts, model, version, {prompt}, finish_reason, guardrail FROM {TABLE}"
            f" WHERE {where} AND guardrail IS NOT NULL",
            [first * 60.0, (last_minute + 1) * 60.0]):
        found = tally(row[6])
        if found is None:
            continue
        add = {"checked": 1}
        name = _counted(found.action)
        if name is not None:
            add[name] = 1
        count(int(row[1] // 60), row[2], row[3], row[4], add)
        for key in found.checks:
            checks[key] = checks.get(key, 0) + 1
        if found.triggered:
            triggered.append(tuple(row))
    recent: list[tuple[float, int, int, dict[str, Any]]] = []
    for row_id, ts, model, version, prompt_ref, finish, raw in triggered:
        found = tally(raw)
        for i, v in enumerate(found.triggered if found else ()):
            recent.append((float(ts), int(row_id), i, {
                "ts": _iso(ts), "model": model, "version": version, "prompt_ref": prompt_ref,
                "stage": str(v.get("stage") or "?"), "action": v.get("action"),
                "checks": [str(c) for c in v["triggered"]], "detail": _detail(v),
                "finish_reason": finish, "ms": v.get("ms"),
            }))
    recent.sort(key=lambda r: r[:3], reverse=True)
    out["buckets"] = [{"start": _iso(t), "ts": t, **c} for t, c in sorted(buckets.items())]
    out["checks"] = [{"stage": s, "check": c, "action": a, "count": n}
                     for (s, c, a), n in sorted(checks.items(), key=lambda kv: (-kv[1], kv[0]))]
    out["models"] = [{"model": m, "version": v, **c} for (m, v), c in sorted(models.items())]
    out["prompts"] = [{"prompt_ref": p, **c} for p, c in sorted(prompts.items())]
    out["recent"] = [r[3] for r in recent[:RECENT]]
    if not out["totals"]["checked"]:
        out["note"] = "no language-model request was checked by the guardrails in this period"
    return out


def in_force(db: Database, policies: str, classifier: str) -> dict[str, Any]:
    """The policy file (``guardrails.policies``; empty: the built-in default) and the
    classifier ``guardrails.classifier`` resolves to in the registry, with the metrics stored
    with its version (held-out recall and false-positive rate, for one trained here)."""
    found: dict[str, Any] | None = None
    note = ""
    try:
        mv = resolve(db, classifier)
        found = {"ref": mv.ref, "version": mv.version, "metrics": mv.metrics,
                 "aliases": mv.aliases, "created_at": mv.created_at}
    except NotFound as exc:
        note = exc.message
    return {"policies": policies or None, "classifier_setting": classifier,
            "classifier": found, "classifier_note": note}
