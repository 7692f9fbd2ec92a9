"""The audit tables: append-only entries (the Merkle leaves), signed checkpoints, keys."""

from __future__ import annotations

from appliance.storage.db import Database
from appliance.storage.migrations import Migration

DATABASE = "appliance"


def _audit_log(db: Database) -> None:
    db.execute(
        "CREATE TABLE audit_log ("
        " seq INTEGER PRIMARY KEY,"
        " ts TEXT NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL, target TEXT NOT NULL,"
        " entry BLOB NOT NULL, leaf_hash BLOB NOT NULL)"
    )
    db.execute("CREATE INDEX audit_log_actor ON audit_log (actor, seq)")
    db.execute("CREATE INDEX audit_log_action ON audit_log (action, seq)")
    db.execute("CREATE INDEX audit_log_target ON audit_log (target, seq)")
    db.execute("CREATE INDEX audit_log_ts ON audit_log (ts)")


def _checkpoints(db: Database) -> None:
    # compact: the perfect-subtree hashes of the tree at `size`, so the next
    # checkpoint hashes only the leaves appended since.
    db.execute(
        "CREATE TABLE audit_checkpoints ("
        " size INTEGER PRIMARY KEY, note TEXT NOT NULL, key_id TEXT NOT NULL,"
        " compact BLOB NOT NULL, created_at TEXT NOT NULL)"
    )


def _keys(db: Database) -> None:
    # One row per signing key; the one with no retired_seq is in force.
    db.execute(
        "CREATE TABLE audit_keys ("
        " key_id TEXT PRIMARY KEY, vkey TEXT NOT NULL UNIQUE,"
        " created_seq INTEGER NOT NULL, retired_seq INTEGER)"
    )
    db.execute(
        "CREATE UNIQUE INDEX audit_keys_in_force ON audit_keys ((retired_seq IS NULL))"
        " WHERE retired_seq IS NULL"
    )


MIGRATIONS = [
    Migration("audit.0001_log", _audit_log),
    Migration("audit.0002_checkpoints", _checkpoints),
    Migration("audit.0003_keys", _keys),
]
