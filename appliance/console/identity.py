"""The console's one door to ``appliance.auth``: users, sessions, tokens and permissions.

Everything the console knows about who someone is and what they may do comes
from ``appliance.auth`` through the functions here, so the web layer adds no
rule of its own: the CLI, the API and the pages can never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from appliance import auth
from appliance.auth import sessions, tokens, users
from appliance.config import Config
from appliance.errors import BadInput, Unauthorized
from appliance.storage.db import Database


@dataclass(frozen=True)
class Caller:
    """Who a request acts as: auth's principal, and the session it came through, if any."""

    principal: auth.Principal
    session_id: str | None = None  # set for a browser session, None for an API token

    @property
    def username(self) -> str:
        return self.principal.name

    @property
    def role(self) -> str:
        return self.principal.role.value

    @property
    def via(self) -> str:
        return self.principal.via

    @property
    def actor(self) -> str:
        """The audit actor: the user's name, as auth itself records sign-ins."""
        return self.principal.name


def permission_names() -> frozenset[str]:
    return frozenset(auth.PERMISSIONS)


def allowed(caller: Caller, permission: str) -> bool:
    """Whether auth's registry grants ``permission`` (a token is narrowed to its scopes)."""
    return permission in caller.principal.permissions()


def authorize(caller: Caller | None, permission: str) -> None:
    """401 without a caller, 403 naming the missing permission: auth's own wording."""
    auth.authorize(caller.principal if caller is not None else None, permission)


def login(db: Database, username: str, password: str, *, source: str,
          config: Config) -> Caller:
    """Check the password (throttled per account by auth) and open a server-side session,
    both in auth's one sign-in transaction with its audit entry."""
    principal, session_id = sessions.sign_in(db, username, password, source=source,
                                             throttle=auth.throttle_from(config),
                                             policy=auth.session_policy_from(config))
    return Caller(principal, session_id)


def from_session(db: Database, session_id: str, *, config: Config) -> Caller | None:
    """The caller of a live session (renewing its idle clock), or None once it has ended."""
    try:
        principal = sessions.touch_session(db, session_id, auth.session_policy_from(config))
    except Unauthorized:
        return None
    return Caller(principal, session_id)


def from_bearer(db: Database, token: str) -> Caller:
    """The caller an API token acts for; Unauthorized when it is unknown, revoked or expired."""
    return Caller(tokens.authenticate_token(db, token))


def logout(db: Database, caller: Caller) -> None:
    if caller.session_id is not None:
        sessions.revoke_session(db, caller.session_id)


def session_max_age(config: Config) -> int:
    """Seconds a session cookie may live: the absolute timeout of auth's session policy."""
    return int(auth.session_policy_from(config).absolute.total_seconds())


def change_own_password(db: Database, caller: Caller, old: str, new: str, *,
                        config: Config) -> None:
    """Re-check the old password (throttled like a sign-in, so a stolen session can not
    guess it; a failure is recorded and audited, a success writes nothing and leaves the
    failure count alone), then set the new one: auth revokes every session."""
    try:
        users.check_credentials(db, caller.username, old, source="password change",
                                throttle=auth.throttle_from(config), purpose="password change")
    except Unauthorized as exc:
        raise BadInput(f"field 'password': {exc.message}") from exc
    users.set_password(db, caller.username, new, actor=caller.actor)


# --- users and tokens (admin pages) -------------------------------------------------------

ROLES = tuple(r.value for r in auth.Role)
SCOPES = tuple(s.value for s in auth.Scope)


def list_users(db: Database) -> list[dict[str, Any]]:
    return users.list_users(db)


def add_user(db: Database, name: str, role: str, password: str, *,
             caller: Caller) -> None:
    users.add_user(db, name, role, password, actor=caller.actor)


def disable_user(db: Database, name: str, *, caller: Caller) -> None:
    users.disable_user(db, name, actor=caller.actor)


def list_tokens(db: Database) -> list[dict[str, Any]]:
    return tokens.list_tokens(db)


def create_token(db: Database, user: str, name: str, scopes: list[str],
                 days: int | None, *, caller: Caller) -> tokens.NewToken:
    return tokens.create_token(db, user, name, scopes, actor=caller.actor, days=days)


def revoke_token(db: Database, token_id: int, *, caller: Caller) -> None:
    tokens.revoke_token(db, token_id, actor=caller.actor)
