"""Core tables of appliance.db: metadata about the data directory itself."""

from __future__ import annotations

from appliance.storage.db import Database
from appliance.storage.migrations import Migration

DATABASE = "appliance"


def _meta(db: Database) -> None:
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")


def _heartbeats(db: Database) -> None:
    # One row per running daemon, so the console and doctor can tell who is alive.
    db.execute(
        "CREATE TABLE heartbeats ("
        " service TEXT NOT NULL, pid INTEGER NOT NULL, host TEXT NOT NULL,"
        " started_at TEXT NOT NULL, seen_at TEXT NOT NULL, details TEXT NOT NULL DEFAULT '{}',"
        " PRIMARY KEY (service, pid, host))"
    )


MIGRATIONS = [
    Migration("core.0001_meta", _meta),
    Migration("core.0002_heartbeats", _heartbeats),
]
