"""Monitoring tables of monitoring.db: delayed labels and the history of monitoring checks.

``feedback`` holds ground truth joined to a served prediction by request id
(and row, for a request that sent several). ``checks`` keeps every drift and
monitoring check's result (window, verdicts, per-feature statistics) so the
console can chart a model's drift over time. Both are high-volume, operational
data and live beside the request log, away from the governed appliance.db.
"""

from __future__ import annotations

from appliance.storage.db import Database
from appliance.storage.migrations import Migration

DATABASE = "monitoring"


def _feedback(db: Database) -> None:
    db.execute(
        "CREATE TABLE feedback ("
        " model TEXT NOT NULL,"
        " request_id TEXT NOT NULL,"
        " row INTEGER NOT NULL DEFAULT 0,"  # which row of a multi-row request
        " label TEXT NOT NULL,"  # the class name, or the number as text for a regressor
        " received_at REAL NOT NULL,"  # Unix seconds
        " received_by TEXT NOT NULL,"
        " PRIMARY KEY (model, request_id, row))"
    )
    db.execute("CREATE INDEX feedback_received ON feedback (model, received_at)")


def _checks(db: Database) -> None:
    db.execute(
        "CREATE TABLE checks ("
        " id INTEGER PRIMARY KEY,"
        " model TEXT NOT NULL, version INTEGER NOT NULL,"
        " checked_at REAL NOT NULL,"  # Unix seconds
        " window_start REAL NOT NULL, window_end REAL NOT NULL,"
        " sampled_rows INTEGER NOT NULL, labelled_rows INTEGER NOT NULL,"
        " data_drift INTEGER,"  # NULL: too few rows to judge
        " prediction_drift INTEGER, concept_drift INTEGER,"
        " drifted_share REAL, breaches TEXT NOT NULL,"  # JSON list of alert kinds
        " report TEXT NOT NULL,"  # the whole report as JSON
        " actor TEXT NOT NULL)"
    )
    db.execute("CREATE INDEX checks_model ON checks (model, checked_at)")


MIGRATIONS = [
    Migration("monitoring.0002_feedback", _feedback),
    Migration("monitoring.0003_checks", _checks),
]
