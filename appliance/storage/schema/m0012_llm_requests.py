"""One row per language-model request: tokens, latencies, device time and cost.

Written by the serving daemon's request log like ``requests`` rows. Prompts and
answers are kept only when ``llm.log_text`` is on (``prompt``/``completion``
stay NULL otherwise). ``device_s`` is the request's share of the steps it ran in
(GPU-seconds on a GPU, CPU-seconds elsewhere); ``cost`` is ``device_s`` priced by
``llm.cost_per_gpu_hour`` when the request ran.
"""

from __future__ import annotations

from appliance.storage.db import Database
from appliance.storage.migrations import Migration

DATABASE = "monitoring"


def _llm_requests(db: Database) -> None:
    db.execute(
        "CREATE TABLE llm_requests ("
        " id INTEGER PRIMARY KEY,"
        " ts REAL NOT NULL,"  # Unix time the request ended
        " day TEXT NOT NULL,"  # UTC date, YYYY-MM-DD
        " model TEXT NOT NULL, version INTEGER NOT NULL,"
        " endpoint TEXT NOT NULL,"  # chat or completions
        " request_id TEXT,"
        " status INTEGER NOT NULL,"
        " stream INTEGER NOT NULL,"
        " prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL,"
        " queue_ms REAL NOT NULL,"
        " ttft_ms REAL,"  # time to first token; NULL when none came
        " itl_ms REAL,"  # mean inter-token latency; NULL under two tokens
        " e2e_ms REAL NOT NULL,"
        " finish_reason TEXT,"
        " device TEXT NOT NULL,"  # cuda or cpu
        " device_s REAL NOT NULL,"
        " cost REAL NOT NULL, currency TEXT NOT NULL,"
        " error TEXT,"
        " prompt TEXT, completion TEXT)"
    )
    db.execute("CREATE INDEX llm_requests_model_ts ON llm_requests (model, ts)")
    db.execute("CREATE INDEX llm_requests_ts ON llm_requests (ts)")


MIGRATIONS = [Migration("monitoring.0012_llm_requests", _llm_requests)]
