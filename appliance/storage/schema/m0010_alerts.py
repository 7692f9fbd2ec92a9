"""Alerts and retraining policies, in appliance.db beside the audit trail.

An alert is a governed record: raising, acknowledging, resolving it and the
retraining job it starts are each written with their audit entry in one
transaction. ``key`` is what deduplicates: while an alert with the same key is
open or acknowledged, a persisting breach only bumps its count and last-seen
time instead of raising a new alert.
"""

from __future__ import annotations

from appliance.storage.db import Database
from appliance.storage.migrations import Migration

DATABASE = "appliance"


def _alerts(db: Database) -> None:
    db.execute(
        "CREATE TABLE alerts ("
        " id INTEGER PRIMARY KEY,"
        " model TEXT NOT NULL, version INTEGER,"
        " kind TEXT NOT NULL,"  # data_drift, concept_drift, performance, quality, latency, errors
        " key TEXT NOT NULL,"
        " state TEXT NOT NULL CHECK (state IN ('open', 'acknowledged', 'resolved')),"
        " severity TEXT NOT NULL,"
        " message TEXT NOT NULL, details TEXT NOT NULL DEFAULT '{}',"
        " first_seen TEXT NOT NULL, last_seen TEXT NOT NULL, count INTEGER NOT NULL,"
        " check_id INTEGER,"  # monitoring.db checks.id of the check that raised it
        " acked_by TEXT, acked_at TEXT, resolved_at TEXT,"
        " retrain_job_id INTEGER REFERENCES jobs(id))"
    )
    db.execute("CREATE INDEX alerts_state ON alerts (state, id)")
    # At most one live alert per condition: the dedupe rule, held by the database.
    db.execute("CREATE UNIQUE INDEX alerts_live ON alerts (key)"
               " WHERE state IN ('open', 'acknowledged')")


def _policies(db: Database) -> None:
    db.execute(
        "CREATE TABLE retraining_policies ("
        " model TEXT PRIMARY KEY,"
        " source TEXT NOT NULL, policy TEXT NOT NULL,"
        " set_at TEXT NOT NULL, set_by TEXT NOT NULL)"
    )


MIGRATIONS = [
    Migration("alerts.0001_alerts", _alerts),
    Migration("alerts.0002_retraining_policies", _policies),
]
