"""What a version's promotion left on record: its gate reports and approvals.

Read by the model card and the console's model page; kept apart from ``service``
so that reading them does not load the gates, the rollout and model signing.
"""

from __future__ import annotations

import json
from typing import Any

from appliance.registry import ModelVersion, resolve
from appliance.storage.db import Database


def list_approvals(db: Database, mv: ModelVersion) -> list[dict[str, Any]]:
    return list(db.query("SELECT approver, role, comment, created_at FROM approvals"
                         " WHERE version_id = ? ORDER BY id", [mv.id]))


def gate_reports(db: Database, ref: str) -> list[dict[str, Any]]:
    """Every gate report of a version, oldest first."""
    mv = resolve(db, ref)
    rows = list(db.query("SELECT id, target, passed, forced, reason, gates, created_at, actor"
                         " FROM gate_reports WHERE version_id = ? ORDER BY id", [mv.id]))
    for r in rows:
        r["gates"] = json.loads(r["gates"])
        r["passed"], r["forced"] = bool(r["passed"]), bool(r["forced"])
    return rows
