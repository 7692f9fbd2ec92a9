"""Core table of monitoring.db; the monitoring tables come with the monitoring service."""

from __future__ import annotations

from appliance.storage.db import Database
from appliance.storage.migrations import Migration

DATABASE = "monitoring"


def _meta(db: Database) -> None:
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")


MIGRATIONS = [Migration("monitoring.0001_meta", _meta)]
