"""Users: add, list, disable, change password, sign in (with throttling), and local identity.

Every change writes its audit entry in the same transaction. Failed sign-ins
are rows of ``login_failures``, counted per account over a sliding window, so
all console workers throttle together.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from appliance.audit import append
from appliance.auth.passwords import (
    DUMMY_HASH,
    check_password_policy,
    hash_password,
    verify_password,
)
from appliance.auth.permissions import Principal, Role
from appliance.errors import BadInput, Conflict, NotFound, Unauthorized
from appliance.storage.db import Database, immediate

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


def add_user(db: Database, name: str, role: str, password: str, *, actor: str) -> int:
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


def list_users(db: Database) -> list[dict[str, Any]]:
    return [
        {"name": r[0], "role": r[1], "disabled": bool(r[2]), "created_at": r[3],
         "password_changed_at": r[4]}
        for r in db.execute("SELECT name, role, disabled, created_at, password_changed_at"
                            " FROM users ORDER BY name")
    ]


def _user_id(db: Database, name: str) -> int:
    row = db.execute("SELECT id FROM users WHERE name = ?", [name]).fetchone()
    if row is None:
        raise NotFound(f"no user {name}; see 'appliance users list'")
    return int(row[0])


def disable_user(db: Database, name: str, *, actor: str) -> None:
    """Disable an account: its sessions and tokens stop working at once."""
    now = _iso(_now())
    with immediate(db):
        uid = _user_id(db, name)
        db.execute("UPDATE users SET disabled = 1 WHERE id = ?", [uid])
        db.execute("UPDATE sessions SET revoked_at = ? WHERE user_id = ? AND revoked_at IS NULL",
                   [now, uid])
        append(db, actor=actor, action="user.disable", target=f"user:{name}", details={})


def set_password(db: Database, name: str, password: str, *, actor: str) -> None:
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


def _anonymous(source: str) -> str:
    return f"anonymous:{source}" if source else "anonymous"


def _failures(db: Database, name: str, since: str) -> int:
    return int(db.execute("SELECT COUNT(*) FROM login_failures WHERE name = ? AND at >= ?",
                          [name, since]).fetchone()[0])


# Runs inside the transaction that records a successful check: (user id, principal).
OnSuccess = Callable[[int, Principal], None]


def check_credentials(
    db: Database, name: str, password: str, *, source: str = "",
    throttle: Throttle = Throttle(), purpose: str = "", on_success: OnSuccess | None = None,
) -> Principal:
    """Check a password under the per-account throttle; every failure is an audit entry.

    After ``max_failures`` failures within ``window`` the account refuses the
    check, even with the right password, until the window has passed. The
    failures that decide are counted inside the write transaction that records
    the outcome, so concurrent console workers can not let more guesses through
    than the limit (the Argon2 hash itself is computed outside it, so that the
    write lock is never held while hashing).

    On success ``on_success`` runs inside that same transaction and writes the
    success's own state and audit entry; without it the check writes nothing
    (a re-authentication, not a sign-in) and the failure count is left as is.
    """
    now = _now()
    since = _iso(now - throttle.window)
    # Read without the lock, to refuse an account already locked out without hashing;
    # it can only refuse early (failures only age out), never let a guess through.
    locked_hint = _failures(db, name, since) >= throttle.max_failures
    row = None
    ok = False
    if not locked_hint:
        row = db.execute("SELECT password_hash FROM users WHERE name = ?", [name]).fetchone()
        ok = verify_password(row[0] if row else DUMMY_HASH, password) and row is not None
    principal: Principal | None = None
    refusal = ""
    details: dict[str, Any] = {"purpose": purpose} if purpose else {}
    with immediate(db):
        if locked_hint or _failures(db, name, since) >= throttle.max_failures:
            append(db, actor=_anonymous(source), action="auth.login_throttled",
                   target=f"user:{name}", details=details)
            minutes = int(throttle.window.total_seconds() // 60)
            refusal = f"too many failed sign-ins for {name}; try again in {minutes} minutes"
        else:
            current = db.execute("SELECT id, role, password_hash, disabled FROM users"
                                 " WHERE name = ?", [name]).fetchone()
            # The hash must be the one just verified: a password changed meanwhile fails.
            ok = ok and row is not None and current is not None and current[2] == row[0]
            if not ok or current[3]:
                db.execute("INSERT INTO login_failures (name, at) VALUES (?, ?)",
                           [name, _iso(now)])
                append(db, actor=_anonymous(source), action="auth.login_failed",
                       target=f"user:{name}",
                       details={"reason": "disabled" if ok else "bad name or password",
                                **details})
                refusal = "bad user name or password, or the account is disabled"
            else:
                principal = Principal(name=name, role=Role(current[1]))
                if on_success is not None:
                    on_success(int(current[0]), principal)
    if principal is None:
        raise Unauthorized(refusal)
    return principal


def authenticate(
    db: Database, name: str, password: str, *, source: str = "",
    throttle: Throttle = Throttle(),
) -> Principal:
    """Sign in without a session (token-less uses): check the password and, in the same
    transaction, clear the account's failures and append ``auth.login``. The console
    signs in with ``sessions.sign_in``, which also opens its session in that transaction."""

    def record(user_id: int, principal: Principal) -> None:
        clear_failures(db, name)
        append(db, actor=name, action="auth.login", target=f"user:{name}",
               details={"source": source} if source else {})

    return check_credentials(db, name, password, source=source, throttle=throttle,
                             on_success=record)


def clear_failures(db: Database, name: str) -> None:
    """Forget an account's failed sign-ins; call inside the transaction of a sign-in."""
    db.execute("DELETE FROM login_failures WHERE name = ?", [name])


def local_principal(db: Database | None, os_user: str) -> Principal | None:
    """The identity of a CLI user on the box: root and the service user are admins;
    another OS user is the appliance user of the same name, if there is an enabled one."""
    if os_user in ADMIN_OS_USERS:
        return Principal(name=f"local:{os_user}", role=Role.ADMIN, via="local")
    if db is None or not db["users"].exists():
        return None
    row = db.execute("SELECT role FROM users WHERE name = ? AND disabled = 0",
                     [os_user]).fetchone()
    return Principal(name=os_user, role=Role(row[0]), via="local") if row else None
