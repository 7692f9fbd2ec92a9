"""Users: add, list, disable, change password, sign in (with throttling), and local identity.

Every change writes its audit entry in the same transaction. Failed sign-ins
are rows of ``login_failures``, counted per account over a sliding window, so
all console workers throttle together.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlite_utils

from appliance.audit import append
from appliance.auth.passwords import (
    DUMMY_HASH,
    check_password_policy,
    hash_password,
    verify_password,
)
from appliance.auth.permissions import Principal, Role
from appliance.errors import BadInput, Conflict, NotFound, Unauthorized
from appliance.storage.db import immediate

_NAME = re.compile(r"[a-z_][a-z0-9_.-]{0,63}")
ADMIN_OS_USERS = frozenset({"root", "appliance"})


@dataclass(frozen=True)
class Throttle:
    max_failures: int = 10
    window: timedelta = timedelta(minutes=15)


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(t: datetime) -> str:
    return t.isoformat(timespec="microseconds")


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name or ""):
        raise BadInput(f"user name {name!r}: use 1-64 lowercase letters, digits, '_', '.', '-', "
                       "starting with a letter or '_'")
    return name


def parse_role(role: str) -> Role:
    try:
        return Role(role)
    except ValueError as exc:
        raise BadInput(f"role {role!r}: expected one of "
                       + ", ".join(r.value for r in Role)) from exc


def add_user(db: sqlite_utils.Database, name: str, role: str, password: str, *, actor: str) -> int:
    check_name(name)
    parsed = parse_role(role)
    check_password_policy(password)
    hashed = hash_password(password)
    now = _iso(_now())
    with immediate(db):
        if db.execute("SELECT 1 FROM users WHERE name = ?", [name]).fetchone():
            raise Conflict(f"user {name} already exists")
        cur = db.execute(
            "INSERT INTO users (name, role, password_hash, created_at, password_changed_at)"
            " VALUES (?, ?, ?, ?, ?)", [name, parsed.value, hashed, now, now])
        append(db, actor=actor, action="user.add", target=f"user:{name}",
               details={"role": parsed.value})
    return int(cur.lastrowid or 0)


def list_users(db: sqlite_utils.Database) -> list[dict[str, Any]]:
    return [
        {"name": r[0], "role": r[1], "disabled": bool(r[2]), "created_at": r[3],
         "password_changed_at": r[4]}
        for r in db.execute("SELECT name, role, disabled, created_at, password_changed_at"
                            " FROM users ORDER BY name")
    ]


def _user_id(db: sqlite_utils.Database, name: str) -> int:
    row = db.execute("SELECT id FROM users WHERE name = ?", [name]).fetchone()
    if row is None:
        raise NotFound(f"no user {name}; see 'appliance users list'")
    return int(row[0])


def disable_user(db: sqlite_utils.Database, name: str, *, actor: str) -> None:
    """Disable an account: its sessions and tokens stop working at once."""
    now = _iso(_now())
    with immediate(db):
        uid = _user_id(db, name)
        db.execute("UPDATE users SET disabled = 1 WHERE id = ?", [uid])
        db.execute("UPDATE sessions SET revoked_at = ? WHERE user_id = ? AND revoked_at IS NULL",
                   [now, uid])
        append(db, actor=actor, action="user.disable", target=f"user:{name}", details={})


def set_password(db: sqlite_utils.Database, name: str, password: str, *, actor: str) -> None:
    """Change a password and end every session of the account (ASVS 3.3)."""
    check_password_policy(password)
    hashed = hash_password(password)
    now = _iso(_now())
    with immediate(db):
        uid = _user_id(db, name)
        db.execute("UPDATE users SET password_hash = ?, password_changed_at = ? WHERE id = ?",
                   [hashed, now, uid])
        db.execute("UPDATE sessions SET revoked_at = ? WHERE user_id = ? AND revoked_at IS NULL",
                   [now, uid])
        append(db, actor=actor, action="user.passwd", target=f"user:{name}", details={})


def authenticate(
    db: sqlite_utils.Database, name: str, password: str, *, source: str = "",
    throttle: Throttle = Throttle(),
) -> Principal:
    """Check a password; every success and failure is an audit entry.

    After ``max_failures`` failures within ``window`` the account refuses
    sign-ins, even with the right password, until the window has passed.
    """
    now = _now()
    since = _iso(now - throttle.window)
    failures = int(db.execute("SELECT COUNT(*) FROM login_failures WHERE name = ? AND at >= ?",
                              [name, since]).fetchone()[0])
    if failures >= throttle.max_failures:
        with immediate(db):
            append(db, actor=f"anonymous:{source}" if source else "anonymous",
                   action="auth.login_throttled", target=f"user:{name}", details={})
        minutes = int(throttle.window.total_seconds() // 60)
        raise Unauthorized(f"too many failed sign-ins for {name}; try again in {minutes} minutes")
    row = db.execute("SELECT role, password_hash, disabled FROM users WHERE name = ?",
                     [name]).fetchone()
    ok = verify_password(row[1] if row else DUMMY_HASH, password) and row is not None
    if not ok or row[2]:
        with immediate(db):
            db.execute("INSERT INTO login_failures (name, at) VALUES (?, ?)", [name, _iso(now)])
            append(db, actor=f"anonymous:{source}" if source else "anonymous",
                   action="auth.login_failed", target=f"user:{name}",
                   details={"reason": "disabled" if ok else "bad name or password"})
        raise Unauthorized("bad user name or password, or the account is disabled")
    with immediate(db):
        db.execute("DELETE FROM login_failures WHERE name = ?", [name])
        append(db, actor=name, action="auth.login", target=f"user:{name}",
               details={"source": source} if source else {})
    return Principal(name=name, role=Role(row[0]))


def local_principal(db: sqlite_utils.Database | None, os_user: str) -> Principal | None:
    """The identity of a CLI user on the box: root and the service user are admins;
    another OS user is the appliance user of the same name, if there is an enabled one."""
    if os_user in ADMIN_OS_USERS:
        return Principal(name=f"local:{os_user}", role=Role.ADMIN, via="local")
    if db is None or not db["users"].exists():
        return None
    row = db.execute("SELECT role FROM users WHERE name = ? AND disabled = 0",
                     [os_user]).fetchone()
    return Principal(name=os_user, role=Role(row[0]), via="local") if row else None
