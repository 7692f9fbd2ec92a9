"""Prompts, their immutable versions and their aliases.

A version is the canonical content of a checked file, named by its sha256: the same
content registered again gives back the version that holds it. Aliases are the only
thing that moves; each move is a row of ``prompt_alias_history`` and an audit entry,
written in one transaction. ``production`` moves only through ``promotion.promote``
and ``promotion.rollback``; ``set_alias`` refuses it.
"""

from __future__ import annotations

import difflib
import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appliance import audit
from appliance.audit.log import now_iso
from appliance.errors import BadInput, NotFound
from appliance.prompts.spec import (
    MAX_FILE_BYTES,
    PromptSpec,
    Variable,
    parse_prompt,
)
from appliance.registry.aliases import normalise_time
from appliance.registry.refs import check_alias, check_name, parse_ref
from appliance.storage.db import Database, immediate

PRODUCTION = "production"


@dataclass(frozen=True)
class PromptVersion:
    id: int
    name: str
    version: int
    digest: str
    spec: PromptSpec
    created_at: str
    created_by: str
    aliases: tuple[str, ...] = field(default=())

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    def as_dict(self) -> dict[str, Any]:
        return {"ref": self.ref, "name": self.name, "version": self.version,
                "digest": f"sha256:{self.digest}", "created_at": self.created_at,
                "created_by": self.created_by, "aliases": list(self.aliases),
                **self.spec.as_dict()}


@dataclass(frozen=True)
class PromptAliasMove:
    name: str
    alias: str
    version: int | None
    previous: int | None
    at: str
    actor: str
    changed: bool

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def spec_from_json(text: str) -> PromptSpec:
    doc = json.loads(text)
    return PromptSpec(
        model=doc["model"],
        messages=tuple((m["role"], m["content"]) for m in doc["messages"]),
        variables=tuple(Variable(n, v["description"], v["default"])
                        for n, v in doc["variables"].items()),
        parameters=tuple(sorted(doc["parameters"].items())),
        description=doc["description"],
        response_schema=doc.get("response_schema"),
    )


_SELECT = ("SELECT v.id, p.name, v.version, v.digest, v.spec, v.created_at, v.created_by"
           " FROM prompt_versions v JOIN prompts p ON p.id = v.prompt_id")


def _aliases_of(db: Database, version_id: int) -> tuple[str, ...]:
    return tuple(r[0] for r in db.execute(
        "SELECT alias FROM prompt_aliases WHERE version_id = ? ORDER BY alias", [version_id]))


def _from_row(db: Database, row: Any) -> PromptVersion:
    return PromptVersion(id=int(row[0]), name=row[1], version=int(row[2]), digest=row[3],
                         spec=spec_from_json(row[4]), created_at=row[5], created_by=row[6],
                         aliases=_aliases_of(db, int(row[0])))


def _prompt_id(db: Database, name: str) -> int:
    row = db.execute("SELECT id FROM prompts WHERE name = ?", [name]).fetchone()
    if row is None:
        raise NotFound(f"prompt '{name}' does not exist; see 'appliance prompts list'",
                       param="model")
    return int(row[0])


# ---- registering ---------------------------------------------------------------------


def read_file(path: str | os.PathLike[str]) -> bytes:
    file = Path(path)
    try:
        info = file.stat()
        if not stat.S_ISREG(info.st_mode):
            raise BadInput(f"{file} is not a regular file; give a YAML file")
        if info.st_size > MAX_FILE_BYTES:
            raise BadInput(f"{file}: {info.st_size} bytes is over the limit of "
                           f"{MAX_FILE_BYTES}")
        return file.read_bytes()
    except FileNotFoundError as exc:
        raise BadInput(f"{file}: no such file") from exc
    except OSError as exc:
        raise BadInput(f"{file}: can not be read: {exc.strerror or exc}") from exc


def add_prompt(db: Database, name: str, data: bytes, *, actor: str,
               source: str = "prompt") -> tuple[PromptVersion, bool]:
    """Register ``data`` (a prompt's YAML) as the next version of ``name``; return it and
    whether it is new. Everything is checked before the one transaction that writes."""
    check_name(name, "prompt name")
    spec = parse_prompt(data, source)
    digest = spec.digest()
    spec_json = json.dumps(spec.as_dict(), sort_keys=True, ensure_ascii=False)
    with immediate(db):
        row = db.execute(_SELECT + " WHERE p.name = ? AND v.digest = ?", [name, digest]
                         ).fetchone()
        if row is not None:
            return _from_row(db, row), False
        now = now_iso()
        found = db.execute("SELECT id FROM prompts WHERE name = ?", [name]).fetchone()
        if found is not None:
            prompt_id = int(found[0])
        else:
            cur = db.execute("INSERT INTO prompts (name, created_at, created_by)"
                             " VALUES (?, ?, ?)", [name, now, actor])
            prompt_id = int(cur.lastrowid or 0)
        version = int(db.execute("SELECT COALESCE(MAX(version), 0) + 1 FROM prompt_versions"
                                 " WHERE prompt_id = ?", [prompt_id]).fetchone()[0])
        cur = db.execute(
            "INSERT INTO prompt_versions (prompt_id, version, digest, spec, model, description,"
            " created_at, created_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [prompt_id, version, digest, spec_json, spec.model, spec.description, now, actor])
        audit.append(db, actor=actor, action="prompt.register",
                     target=f"prompt:{name}@{version}",
                     details={"digest": f"sha256:{digest}", "model": spec.model})
        created = PromptVersion(int(cur.lastrowid or 0), name, version, digest, spec, now,
                                actor)
    return created, True


# ---- reading ---------------------------------------------------------------------------


def resolve(db: Database, ref: str, *, latest: bool = True) -> PromptVersion:
    """``NAME@VERSION`` or ``NAME@ALIAS``; ``NAME`` alone is its production version, else
    (with ``latest``) its newest."""
    parsed = parse_ref(ref, "prompt reference")
    prompt_id = _prompt_id(db, parsed.name)
    if parsed.version is not None:
        row = db.execute(_SELECT + " WHERE v.prompt_id = ? AND v.version = ?",
                         [prompt_id, parsed.version]).fetchone()
    else:
        alias = parsed.alias or PRODUCTION
        row = db.execute(_SELECT + " JOIN prompt_aliases a ON a.version_id = v.id"
                         " WHERE a.prompt_id = ? AND a.alias = ?", [prompt_id, alias]
                         ).fetchone()
        if row is None and parsed.alias is None and latest:
            row = db.execute(_SELECT + " WHERE v.prompt_id = ? ORDER BY v.version DESC"
                             " LIMIT 1", [prompt_id]).fetchone()
    if row is None:
        raise NotFound(f"prompt {ref} does not exist; see 'appliance prompts list "
                       f"{parsed.name}'", param="model")
    return _from_row(db, row)


def get_version_by_id(db: Database, version_id: int) -> PromptVersion:
    row = db.execute(_SELECT + " WHERE v.id = ?", [version_id]).fetchone()
    if row is None:
        raise NotFound(f"prompt version id {version_id} does not exist")
    return _from_row(db, row)


def list_prompts(db: Database) -> list[dict[str, Any]]:
    """One row per prompt: latest version, how many, its aliases, the latest one's model."""
    rows = list(db.query(
        "SELECT p.name, COUNT(v.id) AS versions, MAX(v.version) AS latest,"
        " (SELECT model FROM prompt_versions WHERE prompt_id = p.id ORDER BY version DESC"
        "  LIMIT 1) AS model, p.created_at, p.created_by"
        " FROM prompts p LEFT JOIN prompt_versions v ON v.prompt_id = p.id"
        " GROUP BY p.id ORDER BY p.name"))
    for r in rows:
        r["aliases"] = {a: int(v) for a, v in db.execute(
            "SELECT a.alias, v.version FROM prompt_aliases a"
            " JOIN prompt_versions v ON v.id = a.version_id JOIN prompts p ON p.id = a.prompt_id"
            " WHERE p.name = ? ORDER BY a.alias", [r["name"]])}
    return rows


def list_versions(db: Database, name: str) -> list[PromptVersion]:
    """Every version of ``name``, newest first."""
    prompt_id = _prompt_id(db, name)
    return [_from_row(db, r) for r in db.execute(
        _SELECT + " WHERE v.prompt_id = ? ORDER BY v.version DESC", [prompt_id]).fetchall()]


def diff(db: Database, a: str, b: str) -> str:
    """A unified diff of two versions' canonical YAML ('' when they are the same)."""
    old, new = resolve(db, a), resolve(db, b)
    return "".join(difflib.unified_diff(
        old.spec.canonical_yaml().splitlines(keepends=True),
        new.spec.canonical_yaml().splitlines(keepends=True),
        fromfile=old.ref, tofile=new.ref))


# ---- aliases ------------------------------------------------------------------------------


def _version_number(db: Database, version_id: int | None) -> int | None:
    if version_id is None:
        return None
    row = db.execute("SELECT version FROM prompt_versions WHERE id = ?", [version_id]
                     ).fetchone()
    return int(row[0]) if row else None


def move_alias_in_transaction(db: Database, pv: PromptVersion, alias: str, *,
                              actor: str, reason: str = "") -> PromptAliasMove:
    """Point ``alias`` at ``pv`` inside the caller's write transaction, with its history row
    and audit entry (for promotion, which checks its gates first)."""
    if not db.conn.in_transaction:
        raise RuntimeError("move_alias_in_transaction needs the caller's write transaction")
    check_alias(alias)
    prompt_id = _prompt_id(db, pv.name)
    row = db.execute("SELECT version_id FROM prompt_aliases WHERE prompt_id = ? AND alias = ?",
                     [prompt_id, alias]).fetchone()
    previous_id = int(row[0]) if row else None
    previous = _version_number(db, previous_id)
    now = now_iso()
    if previous_id == pv.id:
        return PromptAliasMove(pv.name, alias, pv.version, previous, now, actor, changed=False)
    db.execute(
        "INSERT INTO prompt_aliases (prompt_id, alias, version_id, set_at, set_by)"
        " VALUES (?, ?, ?, ?, ?) ON CONFLICT (prompt_id, alias) DO UPDATE SET"
        " version_id = excluded.version_id, set_at = excluded.set_at, set_by = excluded.set_by",
        [prompt_id, alias, pv.id, now, actor])
    db.execute(
        "INSERT INTO prompt_alias_history (prompt_id, alias, version_id, previous_version_id,"
        " at, actor, reason) VALUES (?, ?, ?, ?, ?, ?, ?)",
        [prompt_id, alias, pv.id, previous_id, now, actor, reason])
    audit.append(db, actor=actor, action="prompt.alias.set", target=f"prompt:{pv.name}",
                 details={"alias": alias, "version": pv.version, "previous": previous,
                          "reason": reason})
    return PromptAliasMove(pv.name, alias, pv.version, previous, now, actor, changed=True)


def set_alias(db: Database, ref: str, alias: str, *, actor: str,
              reason: str = "") -> PromptAliasMove:
    """Point ``alias`` at the version ``ref`` names; any alias but ``production``."""
    check_alias(alias)
    if alias == PRODUCTION:
        raise BadInput("'production' decides which version answers and moves only through "
                       "'appliance prompts promote NAME@VERSION' and 'appliance prompts "
                       "rollback NAME'")
    parsed = parse_ref(ref, "prompt reference")
    if parsed.version is None and parsed.alias is None:
        raise BadInput(f"name one version: {parsed.name}@VERSION (or @ALIAS)")
    with immediate(db):
        pv = resolve(db, ref)
        return move_alias_in_transaction(db, pv, alias, actor=actor, reason=reason)


def alias_history(db: Database, name: str,
                  alias: str | None = None) -> list[dict[str, Any]]:
    """Every move of ``name``'s aliases (or one alias), oldest first."""
    prompt_id = _prompt_id(db, name)
    sql = ("SELECT h.id, h.alias, v.version AS version, p.version AS previous, h.at, h.actor,"
           " h.reason FROM prompt_alias_history h"
           " LEFT JOIN prompt_versions v ON v.id = h.version_id"
           " LEFT JOIN prompt_versions p ON p.id = h.previous_version_id"
           " WHERE h.prompt_id = ?")
    params: list[Any] = [prompt_id]
    if alias is not None:
        sql += " AND h.alias = ?"
        params.append(alias)
    return list(db.query(sql + " ORDER BY h.id", params))


def alias_at(db: Database, name: str, alias: str, at: str) -> int | None:
    """The version ``alias`` pointed at at time ``at`` (ISO 8601); None if it was unset."""
    prompt_id = _prompt_id(db, name)
    row = db.execute(
        "SELECT v.version FROM prompt_alias_history h"
        " LEFT JOIN prompt_versions v ON v.id = h.version_id"
        " WHERE h.prompt_id = ? AND h.alias = ? AND h.at <= ? ORDER BY h.id DESC LIMIT 1",
        [prompt_id, alias, normalise_time(at)]).fetchone()
    return int(row[0]) if row and row[0] is not None else None


def fingerprint(db: Database) -> int:
    """Grows with every prompt alias move; unchanged means none moved."""
    return int(db.execute("SELECT COALESCE(MAX(id), 0) FROM prompt_alias_history"
                          ).fetchone()[0])

