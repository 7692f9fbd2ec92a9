"""Daemon liveness in the ``heartbeats`` table: who is running, and since when.

Each daemon process keeps one row (service, pid, host) fresh; a row whose
``seen_at`` is older than a few beat intervals belongs to a process that
died without cleaning up. Heartbeats are not state changes of anything
governed, so they are not audited.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from appliance.audit.log import now_iso
from appliance.storage.db import Database, immediate


def beat(db: Database, service: str, started_at: str,
         details: Mapping[str, Any] | None = None) -> None:
    with immediate(db):
        db.execute(
            "INSERT INTO heartbeats (service, pid, host, started_at, seen_at, details)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (service, pid, host) DO UPDATE SET"
            " seen_at = excluded.seen_at, details = excluded.details",
            [service, os.getpid(), socket.gethostname(), started_at, now_iso(),
             json.dumps(dict(details or {}))],
        )


def clear(db: Database, service: str) -> None:
    """Remove this process's row on a clean exit."""
    with immediate(db):
        db.execute(
            "DELETE FROM heartbeats WHERE service = ? AND pid = ? AND host = ?",
            [service, os.getpid(), socket.gethostname()],
        )


def _age_s(seen_at: str, now: datetime) -> float:
    seen = datetime.fromisoformat(seen_at.replace("Z", "+00:00"))
    return (now - seen).total_seconds()


def live(db: Database, service: str | None = None,
         stale_s: float = 120.0) -> list[dict[str, Any]]:
    """Rows seen within ``stale_s``, each with ``age_s`` and its details parsed."""
    now = datetime.now(UTC)
    sql, args = "SELECT * FROM heartbeats", []
    if service:
        sql, args = sql + " WHERE service = ?", [service]
    out = []
    for r in db.query(sql, args):
        age = _age_s(r["seen_at"], now)
        if age <= stale_s:
            out.append({**r, "details": json.loads(r["details"] or "{}"), "age_s": age})
    return out
