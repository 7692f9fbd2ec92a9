"""Promotion from the console: the gate report before the confirm button, refusals that show
the failed gates, approvals, rollback and staged rollouts, through appliance.promotion."""

from __future__ import annotations

import json

from flask import Flask
from flask.testing import FlaskClient
from helpers.console import csrf_of, open_policy

from appliance.registry import resolve


def production(app: Flask) -> int:
    db = app.config["APPLIANCE_HOME"].db()
    try:
        return resolve(db, "churn@production").version
    finally:
        db.close()


def audit_actions(app: Flask, since: int = 0) -> list[tuple[str, str, dict]]:
    db = app.config["APPLIANCE_HOME"].db()
    try:
        rows = db.execute("SELECT actor, action, entry FROM audit_log WHERE seq > ? ORDER BY seq",
                          [since]).fetchall()
    finally:
        db.close()
    return [(a, b, json.loads(e if isinstance(e, str) else e.decode()).get("details", {}))
            for a, b, e in rows]


def last_seq(app: Flask) -> int:
    db = app.config["APPLIANCE_HOME"].db()
    try:
        return int(db.execute("SELECT MAX(seq) FROM audit_log").fetchone()[0])
    finally:
        db.close()


def test_a_refused_candidate_shows_its_failed_gates(app: Flask,
                                                     clients: dict[str, FlaskClient]) -> None:
    operator = clients["operator"]
    # Step one: the dry run. An imported version has no held-out metrics, so the default
    # policy's metric gate fails, and an operator gets no confirm button.
    page = operator.get("/models/churn/2/promote?to=production").get_data(as_text=True)
    assert "metric:accuracy:vs_production" in page and "FAIL" in page
    assert 'id="confirm"' not in page and 'id="no-confirm"' in page
    assert last_seq(app) and not any(a[1].startswith("model.promote")
                                     for a in audit_actions(app)), "a dry run records nothing"
    # Sending the promotion anyway: refused, the report shown, production unchanged.
    before = last_seq(app)
    refused = operator.post("/models/churn/2/promote",
                            data={"to": "production", "csrf_token": csrf_of(operator)})
    assert refused.status_code == 409
    body = refused.get_data(as_text=True)
    assert 'id="refused"' in body and "metric:accuracy:vs_production" in body
    assert production(app) == 1
    assert [a[1] for a in audit_actions(app, before)] == ["model.promote.refused"]
    # The API says the same, with the report.
    api = operator.post("/api/models/churn/versions/2/promote", json={"to": "production"},
                        headers={"X-CSRF-Token": csrf_of(operator)})
    assert api.status_code == 409
    data = api.get_json()
    assert "gate(s) failed" in data["error"]
    assert "metric:accuracy:vs_production" in data["report"]["failed"]
    # The refusals are stored gate reports, shown on the version page.
    version = operator.get("/models/churn/2").get_data(as_text=True)
    assert version.count("FAILED") >= 2


def test_an_admin_sees_the_force_option_and_must_give_a_reason(
        clients: dict[str, FlaskClient], app: Flask) -> None:
    admin = clients["admin"]
    page = admin.get("/models/churn/2/promote").get_data(as_text=True)
    assert 'id="force"' in page and "Force promotion" in page
    no_reason = admin.post("/models/churn/2/promote",
                           data={"force": "1", "csrf_token": csrf_of(admin)})
    assert no_reason.status_code == 400 and production(app) == 1
    forced = admin.post("/models/churn/2/promote", data={
        "force": "1", "reason": "incident 42", "csrf_token": csrf_of(admin)})
    assert forced.status_code == 303 and production(app) == 2
    assert "model.promote.forced" in [a[1] for a in audit_actions(app)]


def test_a_passing_candidate_is_confirmed_then_promoted_and_rolled_back(
        app: Flask, clients: dict[str, FlaskClient]) -> None:
    open_policy(app.config["APPLIANCE_HOME"])
    operator = clients["operator"]
    page = operator.get("/models/churn/2/promote").get_data(as_text=True)
    assert "every gate passed" in page and 'id="confirm"' in page
    assert production(app) == 1, "showing the report moves nothing"
    before = last_seq(app)
    done = operator.post("/models/churn/2/promote", data={
        "to": "production", "reason": "better", "csrf_token": csrf_of(operator)})
    assert done.status_code == 303 and done.headers["Location"].endswith("/models/churn/2")
    assert production(app) == 2
    entries = audit_actions(app, before)
    actions = [a[1] for a in entries]
    assert "model.promote" in actions and "model.alias.set" in actions
    assert all(a[0] == "operator" for a in entries)
    version = operator.get("/models/churn/2").get_data(as_text=True)
    assert "signed with Ed25519" in version and "passed" in version

    # Roll back through the button: production returns to 1, with its audit entry.
    rolled = operator.post("/models/churn/rollback",
                           data={"reason": "complaints", "csrf_token": csrf_of(operator)})
    assert rolled.status_code == 303 and production(app) == 1
    rollback = [a for a in audit_actions(app) if a[1] == "model.rollback"]
    assert rollback and rollback[-1][2]["to"] == 1 and rollback[-1][2]["reason"] == "complaints"
    # Nothing earlier to go back to now.
    again = operator.post("/api/models/churn/rollback", json={},
                          headers={"X-CSRF-Token": csrf_of(operator)})
    assert again.status_code == 409 and "nothing to roll back" in again.get_json()["error"]


def test_approvals_are_recorded_and_shown(clients: dict[str, FlaskClient]) -> None:
    approver = clients["approver"]
    done = approver.post("/models/churn/2/approve",
                         data={"comment": "looks right", "csrf_token": csrf_of(approver)})
    assert done.status_code == 303
    page = approver.get("/models/churn/2").get_data(as_text=True)
    assert "looks right" in page
    twice = approver.post("/api/models/churn/versions/2/approve", json={},
                          headers={"X-CSRF-Token": csrf_of(approver)})
    assert twice.status_code == 409
    detail = approver.get("/api/models/churn/versions/2").get_json()
    assert [a["approver"] for a in detail["approvals"]] == ["approver"]


def test_a_canary_rollout_is_started_shown_judged_and_aborted(
        app: Flask, clients: dict[str, FlaskClient]) -> None:
    open_policy(app.config["APPLIANCE_HOME"])
    operator = clients["operator"]
    headers = {"X-CSRF-Token": csrf_of(operator)}
    started = operator.post("/api/models/churn/versions/2/promote", json={"to": "canary"},
                            headers=headers)
    assert started.status_code == 200 and started.get_json()["rollout_id"]
    assert production(app) == 1
    page = operator.get("/models/churn").get_data(as_text=True)
    assert 'id="rollout-active"' in page and "canary" in page and 'id="abort"' in page
    steps = operator.post("/api/models/churn/rollout/advance", headers=headers).get_json()
    assert steps["steps"][0]["decision"] == "wait", "no request has reached the canary yet"
    aborted = operator.post("/models/churn/rollout/abort",
                            data={"reason": "not now", "csrf_token": headers["X-CSRF-Token"]})
    assert aborted.status_code == 303
    rollouts = operator.get("/api/models/churn/rollouts").get_json()["rollouts"]
    assert rollouts[0]["state"] == "rolled_back"
    aliases = operator.get("/api/models/churn/versions/2").get_json()["version"]["aliases"]
    assert "canary" not in aliases


def test_model_card_page_and_downloads(clients: dict[str, FlaskClient]) -> None:
    viewer = clients["viewer"]
    page = viewer.get("/models/churn/1/card")
    text = page.get_data(as_text=True)
    assert page.status_code == 200 and 'id="card-summary"' in text and ">churn@1</a>" in text
    html = viewer.get("/models/churn/1/card?format=html")
    assert html.headers["Content-Disposition"].startswith("attachment")
    assert b"<h1>Model card: churn@1</h1>" in html.data
    md = viewer.get("/models/churn/1/card?format=md")
    assert md.get_data(as_text=True).startswith("# Model card: churn@1")
    assert viewer.get("/models/churn/1/card?format=pdf").status_code == 400
    assert viewer.get("/api/models/churn/versions/1/card").get_json()["ref"] == "churn@1"
