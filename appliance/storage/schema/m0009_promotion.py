"""Tables of promotion: policies, gate reports, approvals, staged rollouts, model signatures.

Every row is written in the same transaction as the audit entry that records
it. Gate reports and approvals are append-only; a rollout's state moves only
forward (shadow, canary, then production or rolled_back) and each move is an
audit entry of its own.
"""

from __future__ import annotations

from appliance.storage.db import Database
from appliance.storage.migrations import Migration

DATABASE = "appliance"


def _policies(db: Database) -> None:
    # The YAML as the user wrote it (shown back), and its validated form (used).
    db.execute(
        "CREATE TABLE promotion_policies ("
        " model_id INTEGER PRIMARY KEY REFERENCES models(id),"
        " source TEXT NOT NULL, policy TEXT NOT NULL,"
        " set_at TEXT NOT NULL, set_by TEXT NOT NULL)"
    )


def _gate_reports(db: Database) -> None:
    db.execute(
        "CREATE TABLE gate_reports ("
        " id INTEGER PRIMARY KEY,"
        " version_id INTEGER NOT NULL REFERENCES model_versions(id),"
        " target TEXT NOT NULL,"  # the alias it was promoted (or asked to be) to
        " baseline_version_id INTEGER REFERENCES model_versions(id),"
        " passed INTEGER NOT NULL, forced INTEGER NOT NULL DEFAULT 0,"
        " reason TEXT NOT NULL DEFAULT '', gates TEXT NOT NULL,"
        " created_at TEXT NOT NULL, actor TEXT NOT NULL)"
    )
    db.execute("CREATE INDEX gate_reports_version ON gate_reports (version_id, id)")


def _approvals(db: Database) -> None:
    db.execute(
        "CREATE TABLE approvals ("
        " id INTEGER PRIMARY KEY,"
        " version_id INTEGER NOT NULL REFERENCES model_versions(id),"
        " approver TEXT NOT NULL, role TEXT NOT NULL, comment TEXT NOT NULL DEFAULT '',"
        " created_at TEXT NOT NULL, UNIQUE (version_id, approver))"
    )


def _rollouts(db: Database) -> None:
    db.execute(
        "CREATE TABLE rollouts ("
        " id INTEGER PRIMARY KEY,"
        " model_id INTEGER NOT NULL REFERENCES models(id),"
        " candidate_version_id INTEGER NOT NULL REFERENCES model_versions(id),"
        " baseline_version_id INTEGER REFERENCES model_versions(id),"
        " state TEXT NOT NULL,"  # shadow, canary, production, rolled_back, cancelled
        " plan TEXT NOT NULL,"  # the policy's rollout section, fixed at the start
        " stage_started_at REAL NOT NULL,"  # Unix seconds: request-log windows start here
        " created_at TEXT NOT NULL, created_by TEXT NOT NULL,"
        " updated_at TEXT NOT NULL, ended_at TEXT,"
        " last_check TEXT NOT NULL DEFAULT '{}', reason TEXT NOT NULL DEFAULT '')"
    )
    db.execute("CREATE INDEX rollouts_model ON rollouts (model_id, id)")
    # At most one rollout in progress per model.
    db.execute("CREATE UNIQUE INDEX rollouts_active ON rollouts (model_id)"
               " WHERE state IN ('shadow', 'canary')")


def _signatures(db: Database) -> None:
    db.execute(
        "CREATE TABLE model_signatures ("
        " version_id INTEGER PRIMARY KEY REFERENCES model_versions(id),"
        " key_id TEXT NOT NULL, public_key TEXT NOT NULL, signature TEXT NOT NULL,"
        " signed_at TEXT NOT NULL, signed_by TEXT NOT NULL)"
    )


MIGRATIONS = [
    Migration("promotion.0001_policies", _policies),
    Migration("promotion.0002_gate_reports", _gate_reports),
    Migration("promotion.0003_approvals", _approvals),
    Migration("promotion.0004_rollouts", _rollouts),
    Migration("promotion.0005_signatures", _signatures),
]
