"""The audit log table: append-only entries, the leaves of the audit Merkle tree."""

from __future__ import annotations

import sqlite_utils

from appliance.storage.migrations import Migration

DATABASE = "appliance"


def _audit_log(db: sqlite_utils.Database) -> None:
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


MIGRATIONS = [Migration("audit.0001_log", _audit_log)]
