"""Per-minute roll-ups of the language-model request log, as ``request_minutes`` is for
the tabular one.

``llm_minutes`` holds, per model, version, prompt version (``''`` for none), minute,
device and currency, what ``appliance llm usage``, the LLM and prompt pages and the
guardrails page show: requests, errors, tokens, device seconds, cost, quantile sketches
of time to first token and end-to-end latency, and how many requests the guardrails
checked, blocked, redacted and flagged. ``guardrail_check_minutes`` counts the triggered
checks per minute, stage, check and action; ``guardrail_triggered`` names the requests
with a triggered verdict, so a page finds the newest of them without reading the rest.
Rows are merged in by request id (``rollup_state``'s ``llm_rollup.last_id``).
"""

from __future__ import annotations

from appliance.storage.db import Database
from appliance.storage.migrations import Migration

DATABASE = "monitoring"


def _llm_minutes(db: Database) -> None:
    db.execute(
        "CREATE TABLE llm_minutes ("
        " model TEXT NOT NULL, version INTEGER NOT NULL,"
        " prompt_ref TEXT NOT NULL,"  # NAME@VERSION, or '' for a request that named a model
        " minute INTEGER NOT NULL,"  # Unix time of the request's end // 60
        " device TEXT NOT NULL, currency TEXT NOT NULL,"
        " requests INTEGER NOT NULL, errors INTEGER NOT NULL,"  # errors: status >= 400
        " prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL,"
        " device_s REAL NOT NULL, cost REAL NOT NULL,"
        " ttft_sketch TEXT NOT NULL,"  # JSON {bucket: count} of answered requests, in us
        " e2e_sketch TEXT NOT NULL,"  # the same for end-to-end latency (see rollup)
        " checked INTEGER NOT NULL, blocked INTEGER NOT NULL,"  # guardrail verdicts
        " redacted INTEGER NOT NULL, flagged INTEGER NOT NULL,"
        " PRIMARY KEY (model, version, prompt_ref, minute, device, currency))"
    )
    db.execute("CREATE INDEX llm_minutes_minute ON llm_minutes (minute)")
    db.execute("CREATE INDEX llm_minutes_model ON llm_minutes (model, minute)")
    db.execute("CREATE INDEX llm_minutes_prompt ON llm_minutes (prompt_ref, minute)")
    db.execute(
        "CREATE TABLE guardrail_check_minutes ("
        " minute INTEGER NOT NULL, stage TEXT NOT NULL, check_name TEXT NOT NULL,"
        " action TEXT NOT NULL, count INTEGER NOT NULL,"
        " PRIMARY KEY (minute, stage, check_name, action))"
    )
    db.execute("CREATE TABLE guardrail_triggered (id INTEGER PRIMARY KEY, ts REAL NOT NULL)")
    db.execute("CREATE INDEX guardrail_triggered_ts ON guardrail_triggered (ts)")


MIGRATIONS = [Migration("monitoring.0021_llm_minutes", _llm_minutes)]
