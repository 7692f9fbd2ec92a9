"""What the guardrails decided: the verdicts the serving daemon keeps in monitoring.db's
``llm_requests.guardrail`` (JSON, one entry per stage; see docs/guardrails.md), counted
over time, per check and action, per model version and prompt version; read-only.

A request counts once under its strongest action over both stages (block > redact >
flag); a request without verdicts (guardrails off, or a log older than them) is not
counted as checked. A database without the ``guardrail`` column reads as empty.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

from appliance.errors import NotFound
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


def _add(counts: dict[str, int], action: str | None) -> None:
    counts["checked"] += 1
    if action is not None:
        counts[{"block": "blocked", "redact": "redacted", "flag": "flagged"}[action]] += 1


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
    """The verdicts of the requests that ended in [since, until): totals, per hour (per day
    over three days), per stage, check and action, per model version and per prompt
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
    rows = mdb.execute(
        f"SELECT ts, model, version, {prompt}, finish_reason, guardrail FROM {TABLE}"
        " WHERE ts >= ? AND ts < ? AND guardrail IS NOT NULL ORDER BY ts", [since, until]
    ).fetchall()
    buckets: dict[float, dict[str, int]] = {}
    checks: dict[tuple[str, str, str], int] = {}
    models: dict[tuple[str, int], dict[str, int]] = {}
    prompts: dict[str, dict[str, int]] = {}
    recent: list[dict[str, Any]] = []
    for ts, model, version, prompt_ref, finish, raw in rows:
        verdicts = _verdicts(raw)
        if not verdicts:
            continue
        action = _strongest([v.get("action") for v in verdicts])
        start = (ts // bucket_s) * bucket_s
        for counts in (out["totals"], buckets.setdefault(start, _counts()),
                       models.setdefault((model, version), _counts())):
            _add(counts, action)
        if prompt_ref:
            _add(prompts.setdefault(prompt_ref, _counts()), action)
        for v in verdicts:
            stage = str(v.get("stage") or "?")
            for r in v.get("results") or ():
                if isinstance(r, dict) and r.get("triggered", True):
                    key = (stage, str(r.get("check", "?")), str(r.get("action") or "none"))
                    checks[key] = checks.get(key, 0) + 1
            if v.get("triggered"):
                recent.append({
                    "ts": _iso(ts), "model": model, "version": version, "prompt_ref": prompt_ref,
                    "stage": stage, "action": v.get("action"),
                    "checks": [str(c) for c in v["triggered"]], "detail": _detail(v),
                    "finish_reason": finish, "ms": v.get("ms"),
                })
    out["buckets"] = [{"start": _iso(t), "ts": t, **c} for t, c in sorted(buckets.items())]
    out["checks"] = [{"stage": s, "check": c, "action": a, "count": n}
                     for (s, c, a), n in sorted(checks.items(), key=lambda kv: (-kv[1], kv[0]))]
    out["models"] = [{"model": m, "version": v, **c} for (m, v), c in sorted(models.items())]
    out["prompts"] = [{"prompt_ref": p, **c} for p, c in sorted(prompts.items())]
    out["recent"] = recent[::-1][:RECENT]
    if not rows:
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
