"""API tokens: random, shown once, stored as a SHA-256 hash, scoped, expiring, revocable.

A token is ``apl_`` followed by ``secrets.token_urlsafe(32)``: 256 random
bits, so a fast hash is enough to store it (nothing to brute-force); the
lookup is by hash and the final comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from appliance.audit import append
from appliance.auth.permissions import Principal, Role, Scope
from appliance.errors import BadInput, NotFound, Unauthorized
from appliance.storage.db import Database, immediate

PREFIX = "apl_"
MAX_DAYS = 3650  # as auth.token_days allows; far beyond that a date overflows
USE_RESOLUTION = timedelta(minutes=1)  # last_used_at is written at most this often per token
USE_WAIT_MS = 50  # the most an authentication waits to write last_used_at


@dataclass(frozen=True)
class NewToken:
    id: int
    token: str  # shown once
    expires_at: str | None


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def parse_scopes(scopes: Iterable[str]) -> list[Scope]:
    out = []
    for s in scopes:
        try:
            out.append(Scope(s))
        except ValueError as exc:
            raise BadInput(f"scope {s!r}: expected one of "
                           + ", ".join(x.value for x in Scope)) from exc
    if not out:
        raise BadInput("scope: give at least one of " + ", ".join(x.value for x in Scope))
    return sorted(set(out), key=lambda x: x.value)


def create_token(
    db: Database, user: str, name: str, scopes: Iterable[str], *,
    actor: str, days: int | None = 90,
) -> NewToken:
    parsed = parse_scopes(scopes)
    if not name:
        raise BadInput("token name: give a name that says what the token is for")
    if days is not None and days < 1:
        raise BadInput("expiry: a token must live at least one day")
    if days is not None and days > MAX_DAYS:
        raise BadInput(f"expiry: a token may live at most {MAX_DAYS} days")
    token = PREFIX + secrets.token_urlsafe(32)
    now = datetime.now(UTC)
    expires = (now + timedelta(days=days)).isoformat(timespec="seconds") if days else None
    with immediate(db):
        row = db.execute("SELECT id FROM users WHERE name = ? AND disabled = 0", [user]).fetchone()
        if row is None:
            raise NotFound(f"no enabled user {user}")
        cur = db.execute(
            "INSERT INTO api_tokens (user_id, name, token_hash, scopes, created_at, expires_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            [row[0], name, _hash(token), json.dumps([s.value for s in parsed]),
             now.isoformat(timespec="seconds"), expires])
        token_id = int(cur.lastrowid or 0)
        append(db, actor=actor, action="token.create", target=f"token:{token_id}",
               details={"user": user, "name": name, "scopes": [s.value for s in parsed],
                        "expires_at": expires})
    return NewToken(id=token_id, token=token, expires_at=expires)


def _state(revoked_at: str | None, expired: bool, user_disabled: bool) -> str:
    if revoked_at:
        return "revoked"
    if expired:
        return "expired"
    return "user disabled" if user_disabled else "active"


def _expired(expires_at: str | None, now: datetime) -> bool:
    return bool(expires_at) and datetime.fromisoformat(str(expires_at)) <= now


def list_tokens(db: Database, user: str | None = None) -> list[dict[str, Any]]:
    """Tokens without their secrets; ``state`` says whether one still works: active,
    revoked, expired, or user disabled (its user's account is disabled)."""
    sql = ("SELECT t.id, u.name, t.name, t.scopes, t.created_at, t.expires_at, t.revoked_at,"
           " t.last_used_at, u.disabled FROM api_tokens t JOIN users u ON u.id = t.user_id")
    args: list[Any] = []
    if user is not None:
        sql += " WHERE u.name = ?"
        args.append(user)
    now = datetime.now(UTC)
    out = []
    for r in db.execute(sql + " ORDER BY t.id", args):
        expired = _expired(r[5], now)
        out.append({"id": r[0], "user": r[1], "name": r[2], "scopes": json.loads(r[3]),
                    "created_at": r[4], "expires_at": r[5], "revoked_at": r[6],
                    "last_used_at": r[7], "expired": expired, "user_disabled": bool(r[8]),
                    "state": _state(r[6], expired, bool(r[8]))})
    return out


def revoke_token(db: Database, token_id: int, *, actor: str) -> None:
    with immediate(db):
        row = db.execute("SELECT revoked_at FROM api_tokens WHERE id = ?", [token_id]).fetchone()
        if row is None:
            raise NotFound(f"no token {token_id}; see 'appliance tokens list'")
        if row[0] is None:
            db.execute("UPDATE api_tokens SET revoked_at = ? WHERE id = ?",
                       [datetime.now(UTC).isoformat(timespec="seconds"), token_id])
        append(db, actor=actor, action="token.revoke", target=f"token:{token_id}", details={})


def token_owner(db: Database, token_id: int) -> str:
    row = db.execute("SELECT u.name FROM api_tokens t JOIN users u ON u.id = t.user_id"
                     " WHERE t.id = ?", [token_id]).fetchone()
    if row is None:
        raise NotFound(f"no token {token_id}; see 'appliance tokens list'")
    return str(row[0])


def _note_use(db: Database, token_id: int, last_used: str | None,
              now: datetime) -> None:
    """Record when a token was last used, at most once per ``USE_RESOLUTION`` per token,
    so that inference stays a read: best effort, waiting at most ``USE_WAIT_MS`` for the
    write lock and skipping the note when the database is busy or read-only. Bookkeeping,
    like a session's idle clock, so not an audit entry."""
    if last_used and now - datetime.fromisoformat(last_used) < USE_RESOLUTION:
        return
    if db.conn.in_transaction:
        return  # never join, or upgrade, a transaction of the caller's
    stamp = now.isoformat(timespec="seconds")
    cutoff = (now - USE_RESOLUTION).isoformat(timespec="seconds")
    previous = int(db.conn.execute("PRAGMA busy_timeout").fetchone()[0])
    db.conn.execute(f"PRAGMA busy_timeout = {USE_WAIT_MS}")
    try:
        db.conn.execute("UPDATE api_tokens SET last_used_at = ? WHERE id = ?"
                        " AND (last_used_at IS NULL OR last_used_at < ?)",
                        [stamp, token_id, cutoff])
    except sqlite3.OperationalError:
        pass  # busy, locked or read-only: the next use after a minute tries again
    finally:
        db.conn.execute(f"PRAGMA busy_timeout = {previous}")


def authenticate_token(db: Database, token: str) -> Principal:
    """The principal a bearer token acts as; Unauthorized if unknown, revoked or expired."""
    digest = _hash(token)
    row = db.execute(
        "SELECT t.token_hash, t.scopes, t.expires_at, t.revoked_at, u.name, u.role, u.disabled,"
        " t.id, t.last_used_at"
        " FROM api_tokens t JOIN users u ON u.id = t.user_id WHERE t.token_hash = ?",
        [digest]).fetchone()
    if row is None or not hmac.compare_digest(row[0], digest):
        raise Unauthorized("unknown API token")
    now = datetime.now(UTC)
    if row[3] is not None or row[6] or _expired(row[2], now):
        raise Unauthorized("API token revoked or expired, or its user is disabled")
    _note_use(db, int(row[7]), row[8], now)
    return Principal(name=row[4], role=Role(row[5]),
                     scopes=frozenset(Scope(s) for s in json.loads(row[1])), via="token")
