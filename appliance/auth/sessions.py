"""Server-side sessions for the console: created at sign-in, revoked at sign-out.

The browser holds only a random id; the database holds its SHA-256, the
user, and two clocks: an idle timeout (renewed by ``touch``) and an absolute
one. Changing a password or disabling the account revokes every session.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from appliance.audit import append
from appliance.auth.permissions import Principal, Role
from appliance.auth.users import Throttle, check_credentials, clear_failures
from appliance.errors import Unauthorized
from appliance.storage.db import Database, immediate


@dataclass(frozen=True)
class SessionPolicy:
    idle: timedelta = timedelta(minutes=30)
    absolute: timedelta = timedelta(hours=12)


DEFAULT_THROTTLE = Throttle()


def _hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("utf-8")).hexdigest()


def _now() -> datetime:
    return datetime.now(UTC)


def short_id(session_id: str) -> str:
    """How the audit log names a session: a prefix of its stored hash, never the secret."""
    return _hash(session_id)[:16]


def _open(db: Database, user_id: int, name: str, policy: SessionPolicy,
          details: dict[str, Any]) -> str:
    """Insert a new session and its ``auth.login`` entry; inside the caller's transaction."""
    session_id = secrets.token_urlsafe(32)
    now = _now()
    db.execute(
        "INSERT INTO sessions (id_hash, user_id, created_at, last_seen_at, expires_at)"
        " VALUES (?, ?, ?, ?, ?)",
        [_hash(session_id), user_id, now.isoformat(), now.isoformat(),
         (now + policy.absolute).isoformat()])
    append(db, actor=name, action="auth.login", target=f"user:{name}",
           details={**details, "session": short_id(session_id)})
    return session_id


def sign_in(db: Database, name: str, password: str, *, source: str = "",
            throttle: Throttle = DEFAULT_THROTTLE,
            policy: SessionPolicy = SessionPolicy()) -> tuple[Principal, str]:
    """Check a password (throttled per account) and open a session: the account's
    failures are cleared, the session inserted and ``auth.login`` appended in one
    transaction, so no session exists without its entry. Returns the new session id."""
    opened: list[str] = []

    def open_session(user_id: int, principal: Principal) -> None:
        clear_failures(db, name)
        opened.append(_open(db, user_id, name, policy, {"source": source} if source else {}))

    principal = check_credentials(db, name, password, source=source, throttle=throttle,
                                  on_success=open_session)
    return principal, opened[0]


def create_session(db: Database, principal: Principal,
                   policy: SessionPolicy = SessionPolicy()) -> str:
    """A new session for a principal whose identity was established some other way
    (no password is checked here); audited as ``auth.login`` like a sign-in."""
    with immediate(db):
        row = db.execute("SELECT id FROM users WHERE name = ? AND disabled = 0",
                         [principal.name]).fetchone()
        if row is None:
            raise Unauthorized("the account is unknown or disabled")
        return _open(db, int(row[0]), principal.name, policy, {"via": "create_session"})


def touch_session(db: Database, session_id: str,
                  policy: SessionPolicy = SessionPolicy()) -> Principal:
    """The principal of a live session, renewing its idle clock; Unauthorized otherwise."""
    digest = _hash(session_id)
    now = _now()
    with immediate(db):
        row = db.execute(
            "SELECT s.id_hash, s.last_seen_at, s.expires_at, s.revoked_at, u.name, u.role,"
            " u.disabled, s.created_at FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.id_hash = ?",
            [digest]).fetchone()
        if row is None or not hmac.compare_digest(row[0], digest):
            raise Unauthorized("no such session; sign in")
        ends = min(datetime.fromisoformat(row[2]),
                   datetime.fromisoformat(row[7]) + policy.absolute)
        if (row[3] is not None or row[6] or now >= ends
                or now - datetime.fromisoformat(row[1]) >= policy.idle):
            raise Unauthorized("the session has ended; sign in again")
        db.execute("UPDATE sessions SET last_seen_at = ? WHERE id_hash = ?",
                   [now.isoformat(), digest])
    return Principal(name=row[4], role=Role(row[5]))


def revoke_session(db: Database, session_id: str) -> None:
    """Sign out: the session id stops working at once."""
    digest = _hash(session_id)
    with immediate(db):
        row = db.execute("SELECT u.name FROM sessions s JOIN users u ON u.id = s.user_id"
                         " WHERE s.id_hash = ? AND s.revoked_at IS NULL", [digest]).fetchone()
        if row is None:
            return
        db.execute("UPDATE sessions SET revoked_at = ? WHERE id_hash = ?",
                   [_now().isoformat(), digest])
        append(db, actor=row[0], action="auth.logout", target=f"user:{row[0]}",
               details={"session": short_id(session_id)})
