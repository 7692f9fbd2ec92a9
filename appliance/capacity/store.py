"""Capacity profiles, stored with the version they measured (``capacity_profiles``)."""

from __future__ import annotations

import json
from typing import Any

from appliance import audit
from appliance.audit.log import now_iso
from appliance.errors import NotFound
from appliance.registry import resolve
from appliance.storage.db import Database, immediate


def save(db: Database, ref: str, profile: dict[str, Any], *, actor: str,
         job_id: int | None = None) -> int:
    """Store a profile of the version ``ref`` names; audited; its id."""
    mv = resolve(db, ref)
    with immediate(db):
        cur = db.execute(
            "INSERT INTO capacity_profiles (version_id, kind, device, job_id, created_at,"
            " created_by, profile) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [mv.id, profile["kind"], profile["device"], job_id, now_iso(), actor,
             json.dumps(profile, sort_keys=True)])
        profile_id = int(cur.lastrowid or 0)
        audit.append(db, actor=actor, action="capacity.profile", target=f"model:{mv.ref}",
                     details={"profile_id": profile_id, "points": len(profile["points"]),
                              "device": profile["device"], "job_id": job_id})
    return profile_id


def _row(row: Any, name: str, version: int) -> dict[str, Any]:
    data = json.loads(row["profile"])
    data.update({"id": row["id"], "model": name, "version": version, "job_id": row["job_id"],
                 "created_at": row["created_at"], "created_by": row["created_by"]})
    return data


def latest(db: Database, ref: str) -> dict[str, Any] | None:
    """The newest profile of the version ``ref`` names, or None."""
    mv = resolve(db, ref)
    rows = list(db.query(
        "SELECT * FROM capacity_profiles WHERE version_id = ? ORDER BY id DESC LIMIT 1",
        [mv.id]))
    return _row(rows[0], mv.name, mv.version) if rows else None


def get(db: Database, profile_id: int) -> dict[str, Any]:
    rows = list(db.query(
        "SELECT p.*, m.name, v.version FROM capacity_profiles p"
        " JOIN model_versions v ON v.id = p.version_id JOIN models m ON m.id = v.model_id"
        " WHERE p.id = ?", [profile_id]))
    if not rows:
        raise NotFound(f"no capacity profile {profile_id}")
    return _row(rows[0], rows[0]["name"], rows[0]["version"])


def listing(db: Database, name: str | None = None) -> list[dict[str, Any]]:
    """One summary per profile, newest first: id, model, version, kind, device, points."""
    where, args = ("WHERE m.name = ?", [name]) if name else ("", [])
    out = []
    for row in db.query(
            "SELECT p.id, m.name, v.version, p.kind, p.device, p.job_id, p.created_at,"
            " p.created_by, json_array_length(p.profile, '$.points') AS points"
            " FROM capacity_profiles p JOIN model_versions v ON v.id = p.version_id"
            f" JOIN models m ON m.id = v.model_id {where} ORDER BY p.id DESC", args):
        out.append({"id": row["id"], "model": row["name"], "version": row["version"],
                    "kind": row["kind"], "device": row["device"], "job_id": row["job_id"],
                    "created_at": row["created_at"], "created_by": row["created_by"],
                    "points": row["points"]})
    return out
