"""The console's own record: the outcome of each audit-log verification run from it.

The audit service verifies and reports; it keeps no history of its runs. The
console shows "verified N minutes ago, ok" on the overview, so each run's
outcome is a row here, written with the audit entry that records the run.
"""

from __future__ import annotations

from appliance.storage.db import Database
from appliance.storage.migrations import Migration

DATABASE = "appliance"


def _audit_checks(db: Database) -> None:
    db.execute(
        "CREATE TABLE console_audit_checks ("
        " id INTEGER PRIMARY KEY, at TEXT NOT NULL, actor TEXT NOT NULL,"
        " ok INTEGER NOT NULL, size INTEGER NOT NULL, checkpoints INTEGER,"
        " first_bad_seq INTEGER, reason TEXT)"
    )


MIGRATIONS = [
    Migration("console.0001_audit_checks", _audit_checks),
]
