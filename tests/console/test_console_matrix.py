"""Every console route, for every role: 401, 403 or allowed exactly where expected.

Both tables are written here by hand, from the access-control rules (the role table of
``appliance.auth.permissions``'s design), not read from the code under test: a route
missing from ROUTES, or declaring another permission than ROUTES says, fails the test,
so a new route must be added here with the permission it is meant to need.
"""

from __future__ import annotations

import re

import pytest
from flask import Flask
from flask.testing import FlaskClient
from helpers.console import ROLES, csrf_of

from appliance.console import security

EVERYONE = set(ROLES)
OPERATE = {"admin", "operator"}
APPROVE = {"admin", "approver"}
ADMIN = {"admin"}

# Who holds each permission (issue 7's matrix); "signed-in" is any signed-in user.
EXPECTED_ROLES = {
    "models.read": EVERYONE, "datasets.read": EVERYONE, "runs.read": EVERYONE,
    "jobs.read": EVERYONE, "monitoring.read": EVERYONE, "audit.read": EVERYONE,
    "datasets.write": OPERATE, "train": OPERATE, "jobs.write": OPERATE,
    "models.write": OPERATE, "models.promote": OPERATE, "models.rollback": OPERATE,
    "serving.deploy": OPERATE, "feedback.write": OPERATE, "models.approve": APPROVE,
    "prompts.read": EVERYONE, "prompts.write": OPERATE, "prompts.promote": OPERATE,
    "prompts.rollback": OPERATE, "evals.read": EVERYONE,
    "audit.write": ADMIN, "users.admin": ADMIN, "config.admin": ADMIN, "admin": ADMIN,
    "signed-in": EVERYONE,
}

# The permission each route is meant to need.
ROUTES = {
    "GET /": "models.read",
    "GET /account/password": "signed-in",
    "POST /account/password": "signed-in",
    "GET /alerts": "monitoring.read",
    "POST /alerts/<int:alert_id>/ack": "models.write",
    "GET /api/alerts": "monitoring.read",
    "POST /api/alerts/<int:alert_id>/ack": "models.write",
    "GET /api/audit": "audit.read",
    "GET /api/capacity/profiles": "models.read",
    "GET /api/capacity/profiles/<int:profile_id>": "models.read",
    "GET /api/capacity/report": "monitoring.read",
    "POST /api/audit/verify": "audit.read",
    "GET /api/datasets": "datasets.read",
    "GET /api/evals/compare": "evals.read",
    "GET /api/evals/runs": "evals.read",
    "GET /api/evals/runs/<int:run_id>": "evals.read",
    "GET /api/evals/sets": "evals.read",
    "GET /api/evals/sets/<name>": "evals.read",
    "GET /api/datasets/<name>": "datasets.read",
    "GET /api/datasets/<name>/versions/<int:version>": "datasets.read",
    "GET /api/jobs": "jobs.read",
    "POST /api/jobs": "jobs.write",
    "GET /api/jobs/<int:job_id>": "jobs.read",
    "POST /api/jobs/<int:job_id>/cancel": "jobs.write",
    "GET /api/jobs/<int:job_id>/log": "jobs.read",
    "GET /api/guardrails": "monitoring.read",
    "GET /api/llm/usage": "monitoring.read",
    "GET /api/models": "models.read",
    "GET /api/models/<name>": "models.read",
    "POST /api/models/<name>/feedback": "feedback.write",
    "GET /api/models/<name>/monitoring": "monitoring.read",
    "POST /api/models/<name>/monitoring/check": "train",
    "POST /api/models/<name>/rollback": "models.rollback",
    "POST /api/models/<name>/rollout/abort": "models.rollback",
    "POST /api/models/<name>/rollout/advance": "models.promote",
    "GET /api/models/<name>/rollouts": "models.read",
    "GET /api/models/<name>/versions/<int:version>": "models.read",
    "POST /api/models/<name>/versions/<int:version>/approve": "models.approve",
    "GET /api/models/<name>/versions/<int:version>/card": "models.read",
    "GET /api/models/<name>/versions/<int:version>/gates": "models.promote",
    "POST /api/models/<name>/versions/<int:version>/promote": "models.promote",
    "GET /api/openapi.json": "public",
    "GET /api/prompts": "prompts.read",
    "GET /api/prompts/<name>": "prompts.read",
    "POST /api/prompts/<name>/rollback": "prompts.rollback",
    "GET /api/prompts/<name>/versions/<int:version>": "prompts.read",
    "POST /api/prompts/<name>/versions/<int:version>/promote": "prompts.promote",
    "GET /metrics": "monitoring.read",
    "GET /api/overview": "models.read",
    "GET /api/runs": "runs.read",
    "GET /api/runs/<int:run_id>": "runs.read",
    "GET /api/schedules": "jobs.read",
    "GET /api/settings": "monitoring.read",
    "POST /api/tokens": "users.admin",
    "POST /api/tokens/<int:token_id>/revoke": "users.admin",
    "GET /api/users": "users.admin",
    "POST /api/users": "users.admin",
    "GET /audit": "audit.read",
    "GET /audit/checkpoint": "audit.read",
    "GET /audit/export": "audit.write",
    "POST /audit/verify": "audit.read",
    "GET /capacity": "monitoring.read",
    "GET /capacity/profiles/<int:profile_id>": "models.read",
    "GET /datasets": "datasets.read",
    "GET /evals": "evals.read",
    "GET /evals/compare": "evals.read",
    "GET /evals/runs/<int:run_id>": "evals.read",
    "GET /evals/runs/<int:run_id>/report": "evals.read",
    "GET /evals/sets/<name>": "evals.read",
    "GET /datasets/<name>": "datasets.read",
    "GET /datasets/<name>/<int:version>": "datasets.read",
    "GET /guardrails": "monitoring.read",
    "GET /llm": "monitoring.read",
    "GET /login": "public",
    "POST /login": "public",
    "POST /logout": "signed-in",
    "GET /models": "models.read",
    "GET /models/<name>": "models.read",
    "GET /models/<name>/<int:version>": "models.read",
    "POST /models/<name>/<int:version>/approve": "models.approve",
    "GET /models/<name>/<int:version>/card": "models.read",
    "GET /models/<name>/<int:version>/promote": "models.promote",
    "POST /models/<name>/<int:version>/promote": "models.promote",
    "POST /models/<name>/rollback": "models.rollback",
    "POST /models/<name>/rollout/abort": "models.rollback",
    "POST /models/<name>/rollout/advance": "models.promote",
    "GET /monitoring": "monitoring.read",
    "GET /monitoring/<model>": "monitoring.read",
    "POST /monitoring/<model>/check": "train",
    "GET /prompts": "prompts.read",
    "GET /prompts/<name>": "prompts.read",
    "GET /prompts/<name>/<int:version>": "prompts.read",
    "POST /prompts/<name>/promote": "prompts.promote",
    "POST /prompts/<name>/rollback": "prompts.rollback",
    "GET /runs": "runs.read",
    "GET /runs/<int:run_id>": "runs.read",
    "GET /runs/<int:run_id>/artifacts/<path:path>": "runs.read",
    "GET /runs/compare": "runs.read",
    "GET /settings": "monitoring.read",
    "GET /static/<path:filename>": "public",
    "GET /training": "jobs.read",
    "GET /training/jobs/<int:job_id>": "jobs.read",
    "POST /training/jobs/<int:job_id>/cancel": "jobs.write",
    "POST /training/submit": "train",
    "GET /users": "users.admin",
    "POST /users": "users.admin",
    "POST /users/<username>/disable": "users.admin",
    "POST /users/tokens": "users.admin",
    "POST /users/tokens/<int:token_id>/revoke": "users.admin",
}

# Values for the URL variables, naming objects the fixture created.
VALUES = {"name": "churn", "version": "1", "job_id": "1", "model": "churn",
          "username": "nobody", "token_id": "999", "filename": "console.css",
          "alert_id": "999", "run_id": "1", "path": "notes.txt", "profile_id": "1"}
COMPARE_RULES = {"/evals/compare", "/api/evals/compare"}
DATASET_RULES = {"/datasets/<name>", "/datasets/<name>/<int:version>",
                 "/api/datasets/<name>", "/api/datasets/<name>/versions/<int:version>"}


def url_for_rule(rule: str) -> str:
    values = dict(VALUES)
    if rule in DATASET_RULES:
        values["name"] = "customers"
    if rule.startswith(("/prompts/", "/api/prompts/")):
        values["name"] = "capital"  # the seeded prompt
    if rule.startswith(("/evals/sets/", "/api/evals/sets/")):
        values["name"] = "facts"  # the seeded evaluation set
    if rule in COMPARE_RULES:
        return rule + "?a=1&b=2"  # the seeded evaluation runs
    return re.sub(r"<(?:\w+:)?(\w+)>", lambda m: values[m.group(1)], rule)


def routes(app: Flask) -> list[tuple[str, str, str]]:
    out = []
    for rule in app.url_map.iter_rules():
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            out.append((method, rule.rule, rule.endpoint))
    # Logging out ends the session the rest of the walk uses: last.
    return sorted(out, key=lambda r: (r[2] == "session.logout", r))


def test_every_route_declares_the_permission_it_is_meant_to(app: Flask) -> None:
    undeclared = [r.rule for r in app.url_map.iter_rules()
                  if security.permission_of(app, r.endpoint) is None]
    assert undeclared == [], "routes that declare no permission"
    declared = {f"{m} {rule}": security.permission_of(app, endpoint)
                for m, rule, endpoint in routes(app)}
    assert set(declared) == set(ROUTES), "routes added or removed without updating ROUTES"
    wrong = {k: v for k, v in declared.items() if v != ROUTES[k]}
    assert wrong == {}, "routes declaring another permission than ROUTES says"


def test_every_declared_permission_is_in_auths_registry(app: Flask) -> None:
    from appliance.auth import PERMISSIONS

    for permission in set(ROUTES.values()) - {security.PUBLIC, security.SIGNED_IN}:
        assert permission in PERMISSIONS, permission
        # the role table here agrees with auth's registry
        assert {r.value for r in PERMISSIONS[permission].roles} == EXPECTED_ROLES[permission]


def test_an_unknown_permission_stops_the_app_at_start(app: Flask) -> None:
    app.view_functions["overview.page"].permission = "overview.everything"
    try:
        with pytest.raises(RuntimeError, match="overview.everything"):
            security.check_declared(app)
    finally:
        app.view_functions["overview.page"].permission = "models.read"


def test_a_route_without_a_permission_is_refused(app: Flask, client: FlaskClient) -> None:
    # Deny by default: a view added without @requires answers 403, even to anonymous users.
    app.add_url_rule("/undeclared", "undeclared", lambda: "secret")
    response = client.get("/undeclared")
    assert response.status_code == 403
    assert b"secret" not in response.data


def test_role_route_matrix(app: Flask, clients: dict[str, FlaskClient]) -> None:
    tokens = {role: csrf_of(c) for role, c in clients.items() if role != "anonymous"}
    seen = 0
    for method, rule, _endpoint in routes(app):
        permission = ROUTES[f"{method} {rule}"]
        url = url_for_rule(rule)
        for who, c in clients.items():
            if method == "GET":
                response = c.get(url)
            else:
                # Valid CSRF token and an empty body: authorisation is decided before the
                # body is read, so an allowed role gets past 401/403 (to 2xx, 3xx, 400, 404
                # or 409), and a refused one never reaches the view.
                response = c.post(url, data={"csrf_token": tokens.get(who, "")},
                                  headers={"X-CSRF-Token": tokens.get(who, "")})
            code = response.status_code
            response.close()
            where = f"{who}: {method} {url} ({permission}) -> {code}"
            if permission == security.PUBLIC:
                assert code not in (401, 403), where
                if method == "GET":
                    assert code == 200, where
            elif who == "anonymous":
                assert code == 401, where
            elif who not in EXPECTED_ROLES[permission]:
                assert code == 403, where
            elif method == "GET":
                assert code == 200, where
            else:
                assert code not in (401, 403) and code < 500, where
            seen += 1
    assert seen == 5 * len(ROUTES)


def test_token_scopes_narrow_the_role(app: Flask) -> None:
    from appliance.auth import tokens

    db = app.config["APPLIANCE_HOME"].db()
    try:
        read = tokens.create_token(db, "admin", "dashboards", ["read"], actor="test").token
        infer = tokens.create_token(db, "admin", "client", ["infer"], actor="test").token
    finally:
        db.close()
    c = app.test_client()
    assert c.get("/api/models", headers={"Authorization": f"Bearer {read}"}).status_code == 200
    refused = c.post("/api/models/churn/versions/2/promote", json={"to": "production"},
                     headers={"Authorization": f"Bearer {read}"})
    assert refused.status_code == 403 and "models.promote" in refused.get_json()["error"]
    assert c.get("/api/users", headers={"Authorization": f"Bearer {read}"}).status_code == 403
    assert c.get("/api/models", headers={"Authorization": f"Bearer {infer}"}).status_code == 403


@pytest.mark.parametrize("who", ["anonymous", "viewer"])
def test_api_errors_are_json(clients: dict[str, FlaskClient], who: str) -> None:
    response = clients[who].get("/api/users")
    assert response.status_code == (401 if who == "anonymous" else 403)
    assert response.is_json and "error" in response.get_json()


def test_prometheus_scrapes_the_state_of_the_box_with_a_read_token(app: Flask) -> None:
    from appliance.auth import tokens

    db = app.config["APPLIANCE_HOME"].db()
    try:
        read = tokens.create_token(db, "viewer", "prometheus", ["read"], actor="test").token
        from appliance.audit import service as audit_service

        audit_service.checkpoint(db)
    finally:
        db.close()
    c = app.test_client()
    assert c.get("/metrics").status_code in (302, 401)  # nobody unnamed
    got = c.get("/metrics", headers={"Authorization": f"Bearer {read}"})
    assert got.status_code == 200 and got.content_type.startswith("text/plain")
    text = got.get_data(as_text=True)
    assert 'appliance_jobs{state="queued",kind="noop"} 1' in text  # the seeded job
    assert "appliance_models_served 1" in text  # churn's production version
    assert "# TYPE appliance_alerts gauge" in text
    assert "appliance_audit_entries " in text
    age = re.search(r"^appliance_audit_checkpoint_age_seconds ([\d.e+-]+)$", text, re.M)
    assert age and 0 <= float(age.group(1)) < 3600  # the checkpoint just made
