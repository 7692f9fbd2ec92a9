"""Users, API tokens, server-side sessions and failed-login throttling."""

from __future__ import annotations

from appliance.storage.db import Database
from appliance.storage.migrations import Migration

DATABASE = "appliance"


def _users(db: Database) -> None:
    db.execute(
        "CREATE TABLE users ("
        " id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE,"
        " role TEXT NOT NULL CHECK (role IN ('admin', 'operator', 'approver', 'viewer')),"
        " password_hash TEXT NOT NULL, disabled INTEGER NOT NULL DEFAULT 0,"
        " created_at TEXT NOT NULL, password_changed_at TEXT NOT NULL)"
    )


def _tokens(db: Database) -> None:
    # Only the SHA-256 of a token is kept; the token itself is shown once.
    db.execute(
        "CREATE TABLE api_tokens ("
        " id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL REFERENCES users(id),"
        " name TEXT NOT NULL, token_hash TEXT NOT NULL UNIQUE, scopes TEXT NOT NULL,"
        " created_at TEXT NOT NULL, expires_at TEXT, revoked_at TEXT, last_used_at TEXT)"
    )


def _sessions(db: Database) -> None:
    db.execute(
        "CREATE TABLE sessions ("
        " id_hash TEXT PRIMARY KEY, user_id INTEGER NOT NULL REFERENCES users(id),"
        " created_at TEXT NOT NULL, last_seen_at TEXT NOT NULL, expires_at TEXT NOT NULL,"
        " revoked_at TEXT)"
    )
    db.execute("CREATE INDEX sessions_user ON sessions (user_id)")


def _login_failures(db: Database) -> None:
    # Kept in SQLite so that every console worker sees the same count.
    db.execute(
        "CREATE TABLE login_failures (id INTEGER PRIMARY KEY, name TEXT NOT NULL, at TEXT NOT NULL)"
    )
    db.execute("CREATE INDEX login_failures_name ON login_failures (name, at)")


MIGRATIONS = [
    Migration("auth.0001_users", _users),
    Migration("auth.0002_tokens", _tokens),
    Migration("auth.0003_sessions", _sessions),
    Migration("auth.0004_login_failures", _login_failures),
]
