"""Console security: cookies, CSRF, headers, logout and password change, throttling, tokens."""

from __future__ import annotations

import json

import pytest
from flask import Flask
from flask.testing import FlaskClient
from helpers.console import (
    PASSWORD,
    SESSION_COOKIE,
    Template,
    client_with_session,
    csrf_of,
    login,
    login_csrf,
    make_app,
    open_policy,
    session_token,
)

from appliance.auth import tokens
from appliance.console import apidoc
from appliance.errors import ConfigError
from appliance.storage.home import Home

PAGES = ["/", "/login", "/models", "/models/churn/1", "/training", "/audit", "/settings",
         "/users", "/api/models", "/api/users", "/api/openapi.json", "/nowhere",
         "/static/console.css", "/audit/checkpoint"]


def test_security_headers_on_every_response(clients: dict[str, FlaskClient]) -> None:
    for who in ("anonymous", "viewer", "admin"):
        for url in PAGES:
            response = clients[who].get(url)
            h = response.headers
            csp = h.get("Content-Security-Policy", "")
            assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp, url
            assert "unsafe-inline" not in csp and "script-src" not in csp.replace(
                "default-src 'self'", ""), "scripts only from the console itself"
            assert h.get("X-Content-Type-Options") == "nosniff", url
            assert h.get("Referrer-Policy") == "no-referrer", url
            if not url.startswith("/static/"):
                assert h.get("Cache-Control") == "no-store", url
            response.close()


def test_pages_have_no_inline_script_or_outside_assets(clients: dict[str, FlaskClient]) -> None:
    for url in ["/", "/models/churn/1", "/training/jobs/1", "/datasets/customers/1", "/login",
                "/audit", "/users"]:
        response = clients["admin"].get(url)
        assert response.status_code == 200, url
        html = response.get_data(as_text=True)
        for tag in html.split("<script")[1:]:
            assert tag.lstrip().startswith('src="/static/'), f"{url}: inline or outside script"
        assert " on" + "click=" not in html and "javascript:" not in html
        assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
        assert "https://" not in html


def test_session_cookie_on_plain_loopback(client: FlaskClient) -> None:
    response = login(client, "admin")
    assert response.status_code == 303
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith(f"{SESSION_COOKIE}=")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie
    assert client.get("/").status_code == 200


def test_session_cookie_over_tls_is_host_prefixed_and_secure(app: Flask) -> None:
    c = app.test_client()
    page = c.get("/login", base_url="https://localhost")
    token = page.get_data(as_text=True).split('name="csrf_token" value="')[1].split('"')[0]
    response = c.post("/login", base_url="https://localhost",
                      data={"username": "admin", "password": PASSWORD, "csrf_token": token})
    assert response.status_code == 303
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith("__Host-appliance-session=")
    for attr in ("Secure", "HttpOnly", "SameSite=Strict", "Path=/"):
        assert attr in cookie
    assert "Domain" not in cookie
    assert c.get("/", base_url="https://localhost").status_code == 200
    assert "max-age" in c.get("/", base_url="https://localhost").headers.get(
        "Strict-Transport-Security", "")


def test_plain_http_from_another_host_can_not_log_in(app: Flask) -> None:
    c = app.test_client()
    env = {"REMOTE_ADDR": "192.0.2.7"}
    token = login_csrf(c)
    c.set_cookie("__Host-appliance-login-csrf", token)
    response = c.post("/login", environ_base=env,
                      data={"username": "admin", "password": PASSWORD, "csrf_token": token})
    assert response.status_code == 403
    assert "TLS" in response.get_data(as_text=True)


def test_bad_password_is_refused_and_sets_no_session(client: FlaskClient) -> None:
    response = login(client, "admin", "not the password at all")
    assert response.status_code == 401
    assert session_token(client) is None
    assert client.get("/").status_code == 401


def test_login_without_its_csrf_token_is_refused(client: FlaskClient) -> None:
    login_csrf(client)
    response = client.post("/login", data={"username": "admin", "password": PASSWORD,
                                           "csrf_token": "forged"})
    assert response.status_code == 400
    assert session_token(client) is None


def _production(app: Flask) -> int:
    db = app.config["APPLIANCE_HOME"].db()
    try:
        return int(db.execute("SELECT v.version FROM aliases a JOIN model_versions v"
                              " ON v.id = a.version_id WHERE a.alias = 'production'"
                              ).fetchone()[0])
    finally:
        db.close()


def test_state_change_without_csrf_is_refused(clients: dict[str, FlaskClient], app: Flask) -> None:
    open_policy(app.config["APPLIANCE_HOME"])
    admin = clients["admin"]
    for data, headers in (({}, {}), ({"csrf_token": "wrong"}, {}), ({}, {"X-CSRF-Token": "x"})):
        response = admin.post("/models/churn/2/promote", data={"to": "production", **data},
                              headers=headers)
        assert response.status_code == 403
    api = admin.post("/api/models/churn/versions/2/promote", json={"to": "production"})
    assert api.status_code == 403 and "CSRF" in api.get_json()["error"]
    assert _production(app) == 1, "a refused request changed nothing"
    token = csrf_of(admin)
    ok = admin.post("/api/models/churn/versions/2/promote", json={"to": "production"},
                    headers={"X-CSRF-Token": token})
    assert ok.status_code == 200 and ok.get_json()["move"]["version"] == 2
    assert _production(app) == 2


def test_another_sessions_csrf_token_is_refused(clients: dict[str, FlaskClient]) -> None:
    stolen = csrf_of(clients["operator"])
    response = clients["admin"].post("/models/churn/2/promote",
                                     data={"to": "production", "csrf_token": stolen})
    assert response.status_code == 403


def test_logout_revokes_the_session_server_side(app: Flask, template: Template) -> None:
    client = client_with_session(app, template.sessions["operator"])
    assert client.get("/").status_code == 200
    response = client.post("/logout", data={"csrf_token": csrf_of(client)})
    assert response.status_code == 303
    replay = client_with_session(app, template.sessions["operator"])
    assert replay.get("/").status_code == 401
    assert replay.get("/api/models").status_code == 401
    db = app.config["APPLIANCE_HOME"].db()
    try:
        row = db.execute("SELECT actor FROM audit_log WHERE action = 'auth.logout'").fetchone()
    finally:
        db.close()
    assert row == ("operator",)


def test_password_change_revokes_every_session(app: Flask, template: Template) -> None:
    first = app.test_client()
    assert login(first, "viewer").status_code == 303
    second = client_with_session(app, template.sessions["viewer"])
    assert second.get("/").status_code == 200
    wrong = first.post("/account/password", data={
        "csrf_token": csrf_of(first), "password": "not my password",
        "new_password": "a much longer new passphrase",
        "confirm_password": "a much longer new passphrase"})
    assert wrong.status_code == 400 and first.get("/").status_code == 200
    response = first.post("/account/password", data={
        "csrf_token": csrf_of(first), "password": PASSWORD,
        "new_password": "a much longer new passphrase", "confirm_password":
        "a much longer new passphrase"})
    assert response.status_code == 303
    assert first.get("/").status_code == 401
    assert second.get("/").status_code == 401
    assert login(app.test_client(), "viewer").status_code == 401
    assert login(app.test_client(), "viewer", "a much longer new passphrase").status_code == 303


def test_login_throttling_is_per_account(console_home: Home) -> None:
    app = make_app(console_home, **{"auth.login_max_failures": 3})
    c = app.test_client()
    codes = [login(c, "approver", "wrong password").status_code for _ in range(3)]
    assert codes == [401, 401, 401]
    refused = login(c, "approver", PASSWORD)
    assert refused.status_code == 401, "a throttled account refuses even the right password"
    assert "too many failed sign-ins" in refused.get_data(as_text=True)
    assert session_token(c) is None
    assert login(app.test_client(), "viewer").status_code == 303, "throttling is per account"


def test_api_token_access(app: Flask) -> None:
    open_policy(app.config["APPLIANCE_HOME"])
    db = app.config["APPLIANCE_HOME"].db()
    try:
        token = tokens.create_token(db, "operator", "deploy script", ["read", "write"],
                                    actor="test", days=1)
    finally:
        db.close()
    c = app.test_client()
    bearer = {"Authorization": f"Bearer {token.token}"}
    assert c.get("/api/models", headers=bearer).status_code == 200
    moved = c.post("/api/models/churn/versions/2/promote", json={"to": "production"},
                   headers=bearer)
    assert moved.status_code == 200, "bearer requests need no CSRF token"
    assert c.get("/api/users", headers=bearer).status_code == 403, "operator's role still rules"
    assert c.get("/api/models", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert c.get("/api/models", headers={"Authorization": "Basic abc"}).status_code == 401
    db = app.config["APPLIANCE_HOME"].db()
    try:
        tokens.revoke_token(db, token.id, actor="test")
    finally:
        db.close()
    assert c.get("/api/models", headers=bearer).status_code == 401


def test_admin_manages_users_and_tokens(clients: dict[str, FlaskClient], app: Flask) -> None:
    admin = clients["admin"]
    csrf = {"X-CSRF-Token": csrf_of(admin)}
    added = admin.post("/api/users", json={"username": "carol", "role": "viewer",
                                           "password": "carol's long passphrase"}, headers=csrf)
    assert added.status_code == 200
    short = admin.post("/api/users", json={"username": "dave", "role": "viewer",
                                           "password": "short"}, headers=csrf)
    assert short.status_code == 400 and "password" in short.get_json()["error"]
    made = admin.post("/api/tokens", json={"username": "carol", "name": "reports",
                                           "scopes": "read"}, headers=csrf)
    assert made.status_code == 200
    secret = made.get_json()["secret"]
    listing = admin.get("/api/users").get_json()
    assert "carol" in [u["name"] for u in listing["users"]]
    assert secret not in str(listing), "a token's secret is shown once only"
    c = app.test_client()
    assert c.get("/api/models", headers={"Authorization": f"Bearer {secret}"}).status_code == 200
    assert admin.post("/users/carol/disable",
                      data={"csrf_token": csrf["X-CSRF-Token"]}).status_code == 303
    assert c.get("/api/models", headers={"Authorization": f"Bearer {secret}"}).status_code == 401


def test_openapi_lists_every_api_route(app: Flask, client: FlaskClient) -> None:
    spec = client.get("/api/openapi.json").get_json()
    assert spec["openapi"].startswith("3.")
    count = 0
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/"):
            continue
        path, _ = apidoc._path_and_params(rule.rule)
        assert path in spec["paths"], path
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}:
            op = spec["paths"][path][method.lower()]
            assert op["x-permission"], f"{method} {path} has no permission"
            count += 1
    assert count == sum(len(ops) for ops in spec["paths"].values())
    promote = spec["paths"]["/api/models/{name}/versions/{version}/promote"]["post"]
    assert promote["requestBody"] and promote["x-permission"] == "models.promote"


def test_allowed_networks_refuses_other_clients(console_home: Home) -> None:
    limited = make_app(console_home, **{"console.allowed_networks": "10.0.0.0/8"})
    assert limited.test_client().get("/login").status_code == 403
    inside = limited.test_client().get("/login", environ_base={"REMOTE_ADDR": "10.1.2.3"})
    assert inside.status_code == 200


def _login_form_token(client: FlaskClient) -> str:
    """The login form's own token (a signed-in page also carries the logout form's)."""
    html = client.get("/login").get_data(as_text=True)
    form = html[html.index('action="/login"'):]
    return form.split('name="csrf_token" value="')[1].split('"')[0]


def test_login_never_redirects_off_the_console(client: FlaskClient) -> None:
    token = _login_form_token(client)
    for target in ("/\\evil.example", "/\\/evil.example", "//evil.example",
                   "https://evil.example/", "/\t/evil.example"):
        response = client.post("/login", data={"username": "viewer", "password": PASSWORD,
                                               "csrf_token": token, "next": target})
        assert response.status_code == 303, target
        location = response.headers["Location"]
        # As a browser reads it: a backslash is a slash, tabs and newlines are dropped.
        seen = location.replace("\\", "/").replace("\t", "").replace("\n", "")
        assert seen.startswith("/") and not seen.startswith("//"), f"{target!r} -> {location}"
    response = client.post("/login", data={"username": "viewer", "password": PASSWORD,
                                           "csrf_token": token, "next": "/models?x=1"})
    assert response.headers["Location"] == "/models?x=1"


def test_signing_in_as_another_user_ends_the_old_session(
    app: Flask, template: Template
) -> None:
    browser = client_with_session(app, template.sessions["viewer"])
    assert browser.get("/").status_code == 200
    response = browser.post("/login", data={"username": "operator", "password": PASSWORD,
                                            "csrf_token": _login_form_token(browser)})
    assert response.status_code == 303, response.get_data(as_text=True)
    assert '<span class="role">operator</span>' in browser.get("/").get_data(as_text=True)
    assert client_with_session(app, template.sessions["viewer"]).get("/").status_code == 401
    forged = client_with_session(app, template.sessions["admin"])
    forged.set_cookie("appliance-login-csrf", "attacker")
    refused = forged.post("/login", data={"username": "operator", "password": PASSWORD,
                                          "csrf_token": "other"})
    assert refused.status_code == 400, "the login form's own token is still checked"


def test_a_bad_allowed_network_stops_the_console_at_start(console_home: Home) -> None:
    with pytest.raises(ConfigError, match="console.allowed_networks: 'office'"):
        make_app(console_home, **{"console.allowed_networks": "10.0.0.0/8, office"})
    v6 = make_app(console_home, **{"console.allowed_networks": "10.0.0.0/8, ::1/128"})
    assert v6.test_client().get("/login", environ_base={"REMOTE_ADDR": "::1"}).status_code == 200


def _audit(app: Flask, sql: str, args: tuple = ()) -> list[tuple]:  # type: ignore[type-arg]
    db = app.config["APPLIANCE_HOME"].db()
    try:
        return [tuple(r) for r in db.execute(sql, args).fetchall()]
    finally:
        db.close()


def test_sign_in_names_its_session_in_the_audit_log(app: Flask) -> None:
    import hashlib

    c = app.test_client()
    assert login(c, "approver").status_code == 303
    sid = session_token(c)
    assert sid
    rows = _audit(app, "SELECT entry FROM audit_log WHERE action = 'auth.login'"
                       " AND actor = 'approver' ORDER BY seq DESC LIMIT 1")
    assert json.loads(rows[0][0])["details"]["session"] == hashlib.sha256(sid.encode()).hexdigest()[:16]
    assert not _audit(app, "SELECT seq FROM audit_log WHERE CAST(entry AS TEXT) LIKE ?", (f"%{sid}%",))
    # Every session row, the template's included, has its auth.login entry.
    sessions_count = _audit(app, "SELECT COUNT(*) FROM sessions")[0][0]
    logins = _audit(app, "SELECT COUNT(*) FROM audit_log WHERE action = 'auth.login'")[0][0]
    assert logins == sessions_count


def test_password_change_re_check_is_not_a_sign_in(app: Flask) -> None:
    c = app.test_client()
    assert login(c, "viewer").status_code == 303
    wrong = c.post("/account/password", data={
        "csrf_token": csrf_of(c), "password": "not my password",
        "new_password": "a much longer new passphrase",
        "confirm_password": "a much longer new passphrase"})
    assert wrong.status_code == 400
    changed = c.post("/account/password", data={
        "csrf_token": csrf_of(c), "password": PASSWORD,
        "new_password": "a much longer new passphrase",
        "confirm_password": "a much longer new passphrase"})
    assert changed.status_code == 303
    actions = [r[0] for r in _audit(app, "SELECT action FROM audit_log WHERE target ="
                                         " 'user:viewer' ORDER BY seq")]
    assert actions[-3:] == ["auth.login", "auth.login_failed", "user.passwd"], actions
    assert _audit(app, "SELECT COUNT(*) FROM login_failures WHERE name = 'viewer'")[0][0] == 1, \
        "re-checking the old password does not reset the failure count"


def test_users_page_shows_expired_and_disabled_users_tokens(
        clients: dict[str, FlaskClient], app: Flask) -> None:
    from appliance.auth import users

    db = app.config["APPLIANCE_HOME"].db()
    try:
        users.add_user(db, "olga", "viewer", "olga's long passphrase", actor="test")
        tokens.create_token(db, "olga", "orphaned", ["read"], actor="test")
        old = tokens.create_token(db, "viewer", "stale", ["read"], actor="test")
        tokens.create_token(db, "viewer", "fresh", ["read"], actor="test")
        db.execute("UPDATE api_tokens SET expires_at = '2000-01-01T00:00:00+00:00' WHERE id = ?",
                   [old.id])
        users.disable_user(db, "olga", actor="test")
    finally:
        db.close()
    html = clients["admin"].get("/users").get_data(as_text=True)
    table = html[html.index('id="tokens"'):]
    rows = {name: table[table.index(f"<td>{name}</td>"):].split("</tr>")[0]
            for name in ("orphaned", "stale", "fresh")}
    assert ">user disabled</td>" in rows["orphaned"]
    assert ">expired</td>" in rows["stale"]
    assert ">active</td>" in rows["fresh"]
    listed = {t["name"]: t for t in clients["admin"].get("/api/users").get_json()["tokens"]}
    assert listed["stale"]["expired"] is True and listed["fresh"]["expired"] is False
    assert listed["orphaned"]["state"] == "user disabled"
