"""Aliases: the only part of the registry that moves, with every move kept.

``aliases`` holds where each alias points now; ``alias_history`` holds every
move, append-only, in the same transaction as the move and its audit entry.
The serving daemon polls ``alias_fingerprint`` (one indexed MAX over an
AUTOINCREMENT key) to notice a move without reading the tables.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from appliance import audit
from appliance.audit.log import now_iso
from appliance.errors import BadInput, NotFound
from appliance.registry.refs import check_alias, check_name
from appliance.registry.versions import ModelVersion, _model_id, resolve
from appliance.storage.db import Database, immediate


@dataclass(frozen=True)
class AliasMove:
    name: str
    alias: str
    version: int | None
    previous: int | None
    at: str
    actor: str
    changed: bool

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _version_number(db: Database, version_id: int | None) -> int | None:
    if version_id is None:
        return None
    row = db.execute("SELECT version FROM model_versions WHERE id = ?", [version_id]).fetchone()
    return int(row[0]) if row else None


def move_alias_in_transaction(
    db: Database, mv: ModelVersion, alias: str, *, actor: str, reason: str = ""
) -> AliasMove:
    """Point ``alias`` at ``mv`` inside the caller's open transaction (for services that
    add checks of their own, like promotion gates, before the move)."""
    if not db.conn.in_transaction:
        raise RuntimeError("move_alias_in_transaction needs the caller's write transaction")
    check_alias(alias)
    model_id = _model_id(db, mv.name)
    row = db.execute("SELECT version_id FROM aliases WHERE model_id = ? AND alias = ?",
                     [model_id, alias]).fetchone()
    previous_id = int(row[0]) if row else None
    now = now_iso()
    previous = _version_number(db, previous_id)
    if previous_id == mv.id:
        return AliasMove(mv.name, alias, mv.version, previous, now, actor, changed=False)
    db.execute(
        "INSERT INTO aliases (model_id, alias, version_id, set_at, set_by) VALUES (?, ?, ?, ?, ?)"
        " ON CONFLICT (model_id, alias) DO UPDATE SET version_id = excluded.version_id,"
        " set_at = excluded.set_at, set_by = excluded.set_by",
        [model_id, alias, mv.id, now, actor])
    db.execute(
        "INSERT INTO alias_history (model_id, alias, version_id, previous_version_id, at, actor,"
        " reason) VALUES (?, ?, ?, ?, ?, ?, ?)",
        [model_id, alias, mv.id, previous_id, now, actor, reason])
    audit.append(db, actor=actor, action="model.alias.set", target=f"model:{mv.name}",
                 details={"alias": alias, "version": mv.version, "previous": previous,
                          "reason": reason})
    return AliasMove(mv.name, alias, mv.version, previous, now, actor, changed=True)


def set_alias(
    db: Database, name: str, version: int, alias: str, actor: str,
    reason: str = "",
) -> AliasMove:
    """Point ``name``'s ``alias`` at ``version``; a no-op when it already points there."""
    check_name(name, "model name")
    check_alias(alias)
    with immediate(db):
        mv = resolve(db, f"{name}@{int(version)}")
        return move_alias_in_transaction(db, mv, alias, actor=actor, reason=reason)


def remove_alias(
    db: Database, name: str, alias: str, actor: str, reason: str = ""
) -> AliasMove:
    check_alias(alias)
    with immediate(db):
        model_id = _model_id(db, name)
        row = db.execute("SELECT version_id FROM aliases WHERE model_id = ? AND alias = ?",
                         [model_id, alias]).fetchone()
        if row is None:
            raise NotFound(f"model {name} has no alias '{alias}'")
        previous = _version_number(db, int(row[0]))
        now = now_iso()
        db.execute("DELETE FROM aliases WHERE model_id = ? AND alias = ?", [model_id, alias])
        db.execute(
            "INSERT INTO alias_history (model_id, alias, version_id, previous_version_id, at,"
            " actor, reason) VALUES (?, ?, NULL, ?, ?, ?, ?)",
            [model_id, alias, int(row[0]), now, actor, reason])
        audit.append(db, actor=actor, action="model.alias.remove", target=f"model:{name}",
                     details={"alias": alias, "previous": previous, "reason": reason})
    return AliasMove(name, alias, None, previous, now, actor, changed=True)


def alias_history(
    db: Database, name: str, alias: str | None = None
) -> list[dict[str, Any]]:
    """Every move of ``name``'s aliases (or one alias), oldest first."""
    model_id = _model_id(db, name)
    sql = (
        "SELECT h.id, h.alias, v.version AS version, p.version AS previous, h.at, h.actor,"
        " h.reason FROM alias_history h"
        " LEFT JOIN model_versions v ON v.id = h.version_id"
        " LEFT JOIN model_versions p ON p.id = h.previous_version_id"
        " WHERE h.model_id = ?"
    )
    params: list[Any] = [model_id]
    if alias is not None:
        sql += " AND h.alias = ?"
        params.append(alias)
    return list(db.query(sql + " ORDER BY h.id", params))


def alias_at(db: Database, name: str, alias: str, at: str) -> int | None:
    """The version ``alias`` pointed at, at time ``at`` (ISO 8601, UTC); None if unset."""
    model_id = _model_id(db, name)
    at = normalise_time(at)
    row = db.execute(
        "SELECT v.version FROM alias_history h LEFT JOIN model_versions v ON v.id = h.version_id"
        " WHERE h.model_id = ? AND h.alias = ? AND h.at <= ? ORDER BY h.id DESC LIMIT 1",
        [model_id, alias, at]).fetchone()
    return int(row[0]) if row and row[0] is not None else None


def normalise_time(text: str) -> str:
    """An ISO 8601 time in the exact form of the stored ones, so strings compare as times."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise BadInput(f"invalid time {text!r}: expected ISO 8601, e.g. 2025-01-31T12:00:00Z") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    utc = moment.astimezone(UTC)
    return utc.isoformat(timespec="microseconds").replace("+00:00", "Z")


def list_aliases(db: Database) -> list[dict[str, Any]]:
    """Every alias of every model: ``{name, alias, version, version_id, onnx_digest, set_at,
    set_by}``."""
    return list(db.query(
        "SELECT m.name, a.alias, mv.version, mv.id AS version_id, mv.onnx_digest, a.set_at,"
        " a.set_by FROM aliases a JOIN models m ON m.id = a.model_id"
        " JOIN model_versions mv ON mv.id = a.version_id ORDER BY m.name, a.alias"))


def alias_fingerprint(db: Database) -> int:
    """Grows with every alias move or removal; unchanged means no alias moved."""
    row = db.execute("SELECT COALESCE(MAX(id), 0) FROM alias_history").fetchone()
    return int(row[0])
