"""Access control: passwords, throttling, tokens, sessions, permissions, local identity."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

from appliance.audit import service as audit_service
from appliance.auth import (
    PERMISSIONS,
    Principal,
    Role,
    Scope,
    authorize,
    check_separation_of_duties,
    passwords,
    sessions,
    tokens,
    users,
)
from appliance.errors import BadInput, Conflict, Forbidden, StorageError, Unauthorized
from appliance.storage.db import Database
from appliance.storage.home import Home

PW = "correct horse battery"


def _actions(db: Database) -> list[str]:
    return [e["action"] for e in audit_service.entries(db)]


def test_password_hash_is_argon2id_at_owasp_minimum() -> None:
    stored = passwords.hash_password(PW)
    assert stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert passwords.verify_password(stored, PW)
    assert not passwords.verify_password(stored, PW + "!")
    assert not passwords.verify_password("plain", PW)
    assert stored != passwords.hash_password(PW)  # salted
    with pytest.raises(BadInput, match="12 characters"):
        passwords.check_password_policy("short")


def test_users_lifecycle_is_audited(home: Home, db: Database) -> None:
    users.add_user(db, "alice", "operator", PW, actor="local:root")
    with pytest.raises(Conflict):
        users.add_user(db, "alice", "viewer", PW, actor="local:root")
    with pytest.raises(BadInput, match="role"):
        users.add_user(db, "bob", "superuser", PW, actor="local:root")
    with pytest.raises(BadInput, match="user name"):
        users.add_user(db, "Bob Smith", "viewer", PW, actor="local:root")
    p, sid = sessions.sign_in(db, "alice", PW)
    assert p == Principal(name="alice", role=Role.OPERATOR)
    assert sessions.touch_session(db, sid).name == "alice"
    users.set_password(db, "alice", PW + "2", actor="alice")
    with pytest.raises(Unauthorized):
        sessions.touch_session(db, sid)  # a password change ends sessions
    with pytest.raises(Unauthorized):
        users.authenticate(db, "alice", PW)
    users.disable_user(db, "alice", actor="local:root")
    with pytest.raises(Unauthorized):
        users.authenticate(db, "alice", PW + "2")
    assert users.list_users(db)[0]["disabled"] is True
    assert _actions(db) == ["user.add", "auth.login", "user.passwd", "auth.login_failed",
                            "user.disable", "auth.login_failed"]
    assert audit_service.entries(db, action="auth.login_failed")[0]["actor"] == "anonymous"


def test_failed_logins_are_throttled_in_the_database(home: Home, db: Database) -> None:
    users.add_user(db, "carol", "viewer", PW, actor="local:root")
    throttle = users.Throttle(max_failures=3, window=timedelta(minutes=5))
    for _ in range(3):
        with pytest.raises(Unauthorized, match="bad user name"):
            users.authenticate(db, "carol", "wrong password!", throttle=throttle)
    other = home.db()  # another worker sees the same count
    try:
        with pytest.raises(Unauthorized, match="too many"):
            users.authenticate(other, "carol", PW, throttle=throttle)
    finally:
        other.close()
    assert users.authenticate(db, "carol", PW, throttle=users.Throttle(max_failures=4)).name == "carol"
    # Unknown accounts are counted too, and say the same thing as a bad password.
    with pytest.raises(Unauthorized, match="bad user name"):
        users.authenticate(db, "nobody", PW, throttle=throttle)
    assert "auth.login_throttled" in _actions(db)


def test_tokens_scopes_expiry_and_revocation(home: Home, db: Database) -> None:
    users.add_user(db, "dave", "operator", PW, actor="local:root")
    new = tokens.create_token(db, "dave", "ci", ["infer", "read"], actor="local:root")
    assert new.token.startswith("apl_") and len(new.token) > 40
    stored = db.execute("SELECT token_hash FROM api_tokens").fetchone()[0]
    assert new.token not in stored and len(stored) == 64
    p = tokens.authenticate_token(db, new.token)
    assert p.scopes == frozenset({Scope.INFER, Scope.READ}) and p.role is Role.OPERATOR
    authorize(p, "infer")
    authorize(p, "models.read")
    with pytest.raises(Forbidden, match="needs train"):
        authorize(p, "train")  # the operator may train, the token may not
    with pytest.raises(Unauthorized):
        tokens.authenticate_token(db, new.token[:-1] + ("A" if new.token[-1] != "A" else "B"))
    tokens.revoke_token(db, new.id, actor="dave")
    with pytest.raises(Unauthorized, match="revoked"):
        tokens.authenticate_token(db, new.token)
    expired = tokens.create_token(db, "dave", "old", ["read"], actor="local:root", days=1)
    db.execute("UPDATE api_tokens SET expires_at = '2000-01-01T00:00:00+00:00' WHERE id = ?",
               [expired.id])
    with pytest.raises(Unauthorized, match="expired"):
        tokens.authenticate_token(db, expired.token)
    with pytest.raises(BadInput, match="scope"):
        tokens.create_token(db, "dave", "x", ["root"], actor="local:root")
    assert [t["name"] for t in tokens.list_tokens(db, "dave")] == ["ci", "old"]
    assert _actions(db).count("token.create") == 2 and "token.revoke" in _actions(db)


def test_session_timeouts_and_logout(home: Home, db: Database) -> None:
    users.add_user(db, "erin", "viewer", PW, actor="local:root")
    p = Principal(name="erin", role=Role.VIEWER)
    sid = sessions.create_session(db, p)
    assert sid != sessions.create_session(db, p)
    db.execute("UPDATE sessions SET last_seen_at = '2000-01-01T00:00:00+00:00'")
    with pytest.raises(Unauthorized, match="ended"):
        sessions.touch_session(db, sid)  # idle
    sid = sessions.create_session(db, p)
    with pytest.raises(Unauthorized, match="ended"):
        sessions.touch_session(db, sid, sessions.SessionPolicy(absolute=timedelta(0)))
    sid = sessions.create_session(db, p)
    sessions.revoke_session(db, sid)
    with pytest.raises(Unauthorized):
        sessions.touch_session(db, sid)
    assert "auth.logout" in _actions(db)


def test_permission_registry_roles_and_separation_of_duties() -> None:
    expected = {
        Role.ADMIN: set(PERMISSIONS),
        Role.OPERATOR: {"train", "models.promote", "serving.deploy", "models.read", "infer"},
        Role.APPROVER: {"models.approve", "models.read", "infer"},
        Role.VIEWER: {"models.read", "audit.read", "infer"},
    }
    for role, must in expected.items():
        held = Principal(name="x", role=role).permissions()
        assert must <= held, role
    assert "models.approve" not in Principal("x", Role.OPERATOR).permissions()
    assert "train" not in Principal("x", Role.APPROVER).permissions()
    assert "users.admin" not in Principal("x", Role.OPERATOR).permissions()
    assert not {"train", "models.write", "users.admin"} & Principal("x", Role.VIEWER).permissions()
    with pytest.raises(Unauthorized):
        authorize(None, "models.read")
    with pytest.raises(ValueError):
        authorize(Principal("x", Role.ADMIN), "no.such.permission")
    with pytest.raises(Forbidden):
        authorize(Principal("x", Role.ADMIN, scopes=frozenset({Scope.READ})), "users.admin")
    approver = Principal("frank", Role.APPROVER)
    with pytest.raises(Forbidden, match="trained this version"):
        check_separation_of_duties("frank", approver)
    check_separation_of_duties("grace", approver)


def test_local_identity(db: Database) -> None:
    assert users.local_principal(db, "root") == Principal("local:root", Role.ADMIN, via="local")
    assert users.local_principal(db, "appliance").role is Role.ADMIN
    assert users.local_principal(db, "heidi") is None
    users.add_user(db, "heidi", "approver", PW, actor="local:root")
    assert users.local_principal(db, "heidi") == Principal("heidi", Role.APPROVER, via="local")


def test_generated_password_is_shown_once_and_works(home: Home, runner) -> None:  # type: ignore[no-untyped-def]
    import re

    from appliance.auth.users import authenticate

    result = runner("users", "add", "ann", "--role", "viewer", "--generate-password")
    assert result.exit_code == 0, result.output
    password = re.search(r"one-time password for ann: (\S+)", result.output).group(1)
    assert len(password) >= 12
    db = home.db()
    try:
        assert authenticate(db, "ann", password, source="test").name == "ann"
    finally:
        db.close()
    both = runner("users", "add", "bob", "--role", "viewer", "--generate-password",
                  "--password-stdin")
    assert both.exit_code == 2 and "exclude each other" in both.stderr


def test_a_token_lifetime_past_the_calendar_is_bad_input(home: Home, db: Database,
                                                         runner) -> None:  # type: ignore[no-untyped-def]
    users.add_user(db, "ivan", "viewer", PW, actor="local:root")
    for days in (3651, 10**9, 10**10):
        with pytest.raises(BadInput, match="at most 3650 days"):
            tokens.create_token(db, "ivan", "far", ["read"], actor="local:root", days=days)
    assert tokens.list_tokens(db, "ivan") == []
    assert tokens.create_token(db, "ivan", "ten years", ["read"], actor="local:root",
                               days=3650).expires_at
    result = runner("tokens", "create", "--user", "ivan", "--name", "far", "--scope", "read",
                    "--days", "1000000000")
    assert result.exit_code == 2 and "at most 3650 days" in result.stderr


def test_sign_in_opens_the_session_and_its_entry_in_one_transaction(
        home: Home, db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    import hashlib

    users.add_user(db, "judy", "viewer", PW, actor="local:root")
    with pytest.raises(Unauthorized):
        sessions.sign_in(db, "judy", "wrong password!")
    principal, sid = sessions.sign_in(db, "judy", PW, source="10.0.0.7")
    assert principal == Principal(name="judy", role=Role.VIEWER)
    assert sessions.touch_session(db, sid).name == "judy"
    entry = audit_service.entries(db, action="auth.login")[-1]
    assert entry["actor"] == "judy" and entry["details"]["source"] == "10.0.0.7"
    assert entry["details"]["session"] == hashlib.sha256(sid.encode()).hexdigest()[:16]
    assert sid not in json.dumps(audit_service.entries(db)), "the session secret is never logged"
    assert db.execute("SELECT COUNT(*) FROM login_failures").fetchone()[0] == 0

    # A failure to append the entry leaves no session, and the failures are not cleared.
    with pytest.raises(Unauthorized):
        sessions.sign_in(db, "judy", "wrong password!")
    real_append = sessions.append

    def failing_append(db: Database, **kwargs: Any) -> Any:
        if kwargs["action"] == "auth.login":
            raise StorageError("disk full")
        return real_append(db, **kwargs)

    monkeypatch.setattr(sessions, "append", failing_append)
    before = db.execute("SELECT COUNT(*) FROM sessions").fetchone()[0]
    with pytest.raises(StorageError):
        sessions.sign_in(db, "judy", PW)
    assert db.execute("SELECT COUNT(*) FROM sessions").fetchone()[0] == before
    assert db.execute("SELECT COUNT(*) FROM login_failures").fetchone()[0] == 1
    with pytest.raises(StorageError):
        sessions.create_session(db, principal)
    assert db.execute("SELECT COUNT(*) FROM sessions").fetchone()[0] == before
    monkeypatch.undo()
    logins = len(audit_service.entries(db, action="auth.login"))
    sessions.create_session(db, principal)  # even a session opened without a password
    assert len(audit_service.entries(db, action="auth.login")) == logins + 1
    sessions_without_entry = db.execute("SELECT COUNT(*) FROM sessions").fetchone()[0] - logins - 1
    assert sessions_without_entry == 0


def test_throttle_counts_failures_recorded_while_the_password_was_hashed(
        home: Home, db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another console worker records the limit-reaching failure while this one hashes:
    the count that decides is the one inside the write transaction, so no extra guess
    (here, even the right password) gets through."""
    users.add_user(db, "kim", "viewer", PW, actor="local:root")
    throttle = users.Throttle(max_failures=3, window=timedelta(minutes=5))
    for _ in range(2):
        with pytest.raises(Unauthorized, match="bad user name"):
            users.authenticate(db, "kim", "wrong password!", throttle=throttle)
    real_verify = users.verify_password

    def verify_while_another_worker_fails(stored: str, password: str) -> bool:
        monkeypatch.setattr(users, "verify_password", real_verify)  # the other worker's own
        other = home.db()
        try:
            with pytest.raises(Unauthorized, match="bad user name"):
                users.authenticate(other, "kim", "another wrong one", throttle=throttle)
        finally:
            other.close()
        return real_verify(stored, password)

    monkeypatch.setattr(users, "verify_password", verify_while_another_worker_fails)
    with pytest.raises(Unauthorized, match="too many"):
        sessions.sign_in(db, "kim", PW, throttle=throttle)
    assert db.execute("SELECT COUNT(*) FROM sessions").fetchone()[0] == 0
    assert _actions(db)[-1] == "auth.login_throttled"
    with pytest.raises(Unauthorized, match="too many"):
        users.authenticate(db, "kim", PW, throttle=throttle)


def test_re_checking_a_password_writes_no_sign_in(home: Home, db: Database) -> None:
    users.add_user(db, "lee", "operator", PW, actor="local:root")
    throttle = users.Throttle(max_failures=3, window=timedelta(minutes=5))
    with pytest.raises(Unauthorized, match="bad user name"):
        users.check_credentials(db, "lee", "wrong password!", source="password change",
                                throttle=throttle, purpose="password change")
    failed = audit_service.entries(db, action="auth.login_failed")
    assert len(failed) == 1 and failed[0]["details"]["purpose"] == "password change"
    count = len(_actions(db))
    assert users.check_credentials(db, "lee", PW, throttle=throttle).role is Role.OPERATOR
    assert len(_actions(db)) == count, "a re-check that succeeds writes no audit entry"
    assert "auth.login" not in _actions(db)
    assert db.execute("SELECT COUNT(*) FROM login_failures WHERE name = 'lee'").fetchone()[0] == 1, \
        "a re-check does not reset the failure count"
    for _ in range(2):
        with pytest.raises(Unauthorized):
            users.check_credentials(db, "lee", "wrong password!", throttle=throttle)
    with pytest.raises(Unauthorized, match="too many"):
        users.check_credentials(db, "lee", PW, throttle=throttle)


def test_token_last_use_is_recorded_at_most_once_a_minute(
        home: Home, db: Database) -> None:
    import time
    from datetime import UTC, datetime

    users.add_user(db, "mia", "viewer", PW, actor="local:root")
    new = tokens.create_token(db, "mia", "dash", ["read"], actor="local:root")

    def last_used() -> str | None:
        return tokens.list_tokens(db, "mia")[0]["last_used_at"]

    assert last_used() is None
    tokens.authenticate_token(db, new.token)
    first = last_used()
    assert first is not None
    assert datetime.now(UTC) - datetime.fromisoformat(first) < timedelta(minutes=1)
    recent = (datetime.now(UTC) - timedelta(seconds=30)).isoformat(timespec="seconds")
    db.execute("UPDATE api_tokens SET last_used_at = ?", [recent])
    tokens.authenticate_token(db, new.token)
    assert last_used() == recent, "within a minute of the last note, nothing is written"
    old = (datetime.now(UTC) - timedelta(minutes=2)).isoformat(timespec="seconds")
    db.execute("UPDATE api_tokens SET last_used_at = ?", [old])
    tokens.authenticate_token(db, new.token)
    assert last_used() != old
    # A busy database never makes a token fail, nor waits the busy timeout out.
    db.execute("UPDATE api_tokens SET last_used_at = ?", [old])
    writer = home.db()
    try:
        writer.execute("BEGIN IMMEDIATE")
        started = time.monotonic()
        assert tokens.authenticate_token(db, new.token).name == "mia"
        assert time.monotonic() - started < 1
        writer.execute("ROLLBACK")
    finally:
        writer.close()
    assert last_used() == old
    assert int(db.execute("PRAGMA busy_timeout").fetchone()[0]) == 5000


def test_token_listing_says_which_tokens_still_work(
        home: Home, db: Database) -> None:
    users.add_user(db, "ned", "viewer", PW, actor="local:root")
    users.add_user(db, "oli", "viewer", PW, actor="local:root")
    live = tokens.create_token(db, "ned", "live", ["read"], actor="local:root")
    old = tokens.create_token(db, "ned", "old", ["read"], actor="local:root")
    gone = tokens.create_token(db, "ned", "gone", ["read"], actor="local:root")
    tokens.create_token(db, "oli", "orphan", ["read"], actor="local:root")
    db.execute("UPDATE api_tokens SET expires_at = '2000-01-01T00:00:00+00:00' WHERE id = ?",
               [old.id])
    tokens.revoke_token(db, gone.id, actor="local:root")
    users.disable_user(db, "oli", actor="local:root")
    listed = {t["name"]: t for t in tokens.list_tokens(db)}
    assert {n: t["state"] for n, t in listed.items()} == {
        "live": "active", "old": "expired", "gone": "revoked", "orphan": "user disabled"}
    assert [n for n, t in listed.items() if t["expired"]] == ["old"]
    assert [n for n, t in listed.items() if t["user_disabled"]] == ["orphan"]
    assert tokens.authenticate_token(db, live.token).name == "ned"
