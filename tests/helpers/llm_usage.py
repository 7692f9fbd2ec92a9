"""Language-model request rows written straight into monitoring.db, as the serving daemon's
request log writes them, for the usage report's tests."""

from __future__ import annotations

import time
from typing import Any

from appliance.storage.db import immediate
from appliance.storage.home import Home

DEFAULTS: dict[str, Any] = {
    "model": "chat", "version": 1, "endpoint": "chat", "request_id": None, "status": 200,
    "stream": 0, "prompt_tokens": 5, "completion_tokens": 7, "queue_ms": 1.0, "ttft_ms": 10.0,
    "itl_ms": 2.0, "e2e_ms": 100.0, "finish_reason": "stop", "device": "cuda",
    "device_s": 0.5, "cost": 0.25, "currency": "EUR", "error": None, "prompt": None,
    "completion": None,
}


def row(ts: float | None = None, **fields: Any) -> dict[str, Any]:
    ts = time.time() if ts is None else ts
    return {**DEFAULTS, "ts": ts, "day": day(ts), **fields}


def day(ts: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(ts))


def log_llm(home: Home, rows: list[dict[str, Any]]) -> None:
    mon = home.monitoring_db()
    try:
        with immediate(mon):
            for r in rows:
                mon.execute(f"INSERT INTO llm_requests ({', '.join(r)}) VALUES "
                            f"({', '.join('?' for _ in r)})", list(r.values()))
    finally:
        mon.close()
