"""The Prompts pages: the list with each version's requests of the last day, a prompt's
versions, aliases, history and diff, a version's template, and promotion and rollback of
production through the forms and the API, with every refusal shown rather than a 500.

The seeded prompt is ``capital``: version 1 (max_tokens 16) in production, version 2
(max_tokens 8) on staging (``helpers.console.seed_prompt``).
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from helpers.console import CAPITAL, csrf_of
from helpers.llm_usage import log_llm, row

from appliance.prompts import GateResult, add_prompt
from appliance.prompts import promotion as prompt_promotion
from appliance.storage.home import Home


def production(app: Flask) -> int | None:
    db = app.config["APPLIANCE_HOME"].db()
    try:
        found = db.execute(
            "SELECT v.version FROM prompt_aliases a JOIN prompt_versions v ON v.id = a.version_id"
            " JOIN prompts p ON p.id = a.prompt_id WHERE p.name = 'capital'"
            " AND a.alias = 'production'").fetchone()
        return None if found is None else int(found[0])
    finally:
        db.close()


def audit_actions(app: Flask) -> list[str]:
    db = app.config["APPLIANCE_HOME"].db()
    try:
        return [r[0] for r in db.execute("SELECT action FROM audit_log WHERE action LIKE"
                                         " 'prompt.%' ORDER BY seq")]
    finally:
        db.close()


def promote(client: FlaskClient, **fields: Any) -> Any:
    return client.post("/prompts/capital/promote",
                       data={"csrf_token": csrf_of(client), **fields})


def test_a_viewer_reads_the_list_a_prompt_and_a_version(
        clients: dict[str, FlaskClient]) -> None:
    viewer = clients["viewer"]
    listing = viewer.get("/prompts")
    assert listing.status_code == 200
    text = listing.get_data(as_text=True)
    assert 'href="/prompts"' in text and ">Prompts</a>" in text  # in the navigation
    assert 'href="/prompts/capital"' in text
    assert "production → 1" in text and "staging → 2" in text
    assert 'id="usage-empty"' in text  # no request named a prompt yet

    page = viewer.get("/prompts/capital")
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert "Asks for a country&#39;s capital." in text
    assert 'href="/prompts/capital/2"' in text and 'href="/prompts/capital/1"' in text
    assert "max_tokens <span class=\"mono\">8</span>" in text
    assert 'id="history"' in text and "admin" in text and "promoted" in text
    # A viewer sees no form to move production.
    assert 'id="promote-form"' not in text and 'id="rollback-form"' not in text

    version = viewer.get("/prompts/capital/2")
    assert version.status_code == 200
    text = version.get_data(as_text=True)
    assert '<mark class="var">{{country}}</mark>' in text
    assert "You answer briefly." in text and "<td class=\"nowrap\">system</td>" in text
    assert "The country asked about." in text
    assert "max_tokens: 8" in text  # the canonical YAML
    assert "No request named capital@2 in the last 24 hours." in text
    assert 'id="promote-form"' not in text


def test_usage_per_prompt_version_counts_the_last_day_only(
        console_home: Home, clients: dict[str, FlaskClient]) -> None:
    now = time.time()
    log_llm(console_home, [
        row(now - 60, prompt_ref="capital@1", e2e_ms=100.0),
        row(now - 120, prompt_ref="capital@1", e2e_ms=300.0),
        row(now - 180, prompt_ref="capital@1", status=500, ttft_ms=None),
        row(now - 90, prompt_ref="capital@2"),
        row(now - 2 * 86400, prompt_ref="capital@1"),  # older than a day
        row(now - 30),  # named a model, not a prompt
    ])
    viewer = clients["viewer"]
    usage = {u["ref"]: u for u in viewer.get("/api/prompts").get_json()["usage"]}
    assert set(usage) == {"capital@1", "capital@2"}
    assert usage["capital@1"]["requests"] == 3 and usage["capital@1"]["errors"] == 1
    assert usage["capital@1"]["prompt_tokens"] == 15 and usage["capital@1"]["cost"] == 0.75
    assert usage["capital@1"]["e2e_p95_ms"] == 290.0  # of the two answered requests
    text = viewer.get("/prompts").get_data(as_text=True)
    assert 'id="prompt-usage"' in text and "0.75</span> EUR" in text
    line = viewer.get("/prompts/capital/1").get_data(as_text=True)
    assert "Last 24 h: <strong>3</strong> requests (1 answered with an error)" in line
    detail = viewer.get("/api/prompts/capital").get_json()
    assert detail["usage"]["capital@2"]["requests"] == 1
    assert detail["aliases"] == {"production": 1, "staging": 2}


def test_the_diff_marks_added_and_removed_lines_and_escapes_them(
        app: Flask, clients: dict[str, FlaskClient]) -> None:
    db = app.config["APPLIANCE_HOME"].db()
    try:
        add_prompt(db, "capital", (CAPITAL % 8).replace(
            "Asks for a country's capital.", "'<script>alert(1)</script>'").encode(),
            actor="test")
    finally:
        db.close()
    viewer = clients["viewer"]
    text = viewer.get("/prompts/capital?a=1&b=2").get_data(as_text=True)
    assert '<span class="del">-  max_tokens: 16\n</span>' in text
    assert '<span class="add">+  max_tokens: 8\n</span>' in text
    assert '<span class="file">--- capital@1\n</span>' in text
    assert '<span class="hunk">@@' in text
    text = viewer.get("/prompts/capital?a=2&b=3").get_data(as_text=True)
    assert "<script>alert" not in text
    assert '<span class="add">+description: &lt;script&gt;alert(1)&lt;/script&gt;' in text
    # Without a pair: production (1) against the latest (3).
    text = viewer.get("/prompts/capital").get_data(as_text=True)
    assert "--- capital@1" in text and "+++ capital@3" in text
    same = viewer.get("/prompts/capital?a=2&b=2").get_data(as_text=True)
    assert 'id="diff-same"' in same
    bad = viewer.get("/prompts/capital?a=1&b=9")
    assert bad.status_code == 404 and "capital@9 does not exist" in bad.get_data(as_text=True)
    assert viewer.get("/prompts/capital?a=one").status_code == 400


def test_an_operator_promotes_and_rolls_back_through_the_forms(
        app: Flask, clients: dict[str, FlaskClient]) -> None:
    operator = clients["operator"]
    page = operator.get("/prompts/capital").get_data(as_text=True)
    assert 'id="promote-form"' in page and 'id="rollback-form"' in page
    assert 'id="promote-force"' not in page  # forcing is an admin's
    done = promote(operator, version="2", reason="shorter answers")
    assert done.status_code == 303 and production(app) == 2
    shown = operator.get(done.headers["Location"]).get_data(as_text=True)
    assert "capital@2 is now production." in shown and "shorter answers" in shown
    assert audit_actions(app)[-2:] == ["prompt.promote", "prompt.alias.set"]

    back = operator.post("/prompts/capital/rollback",
                         data={"reason": "cut short", "csrf_token": csrf_of(operator)})
    assert back.status_code == 303 and production(app) == 1
    assert "capital@1 is production again." in operator.get(
        back.headers["Location"]).get_data(as_text=True)
    assert audit_actions(app)[-1] == "prompt.rollback"


def test_a_viewer_is_refused_and_nothing_moves(app: Flask,
                                               clients: dict[str, FlaskClient]) -> None:
    viewer = clients["viewer"]
    token = csrf_of(viewer)
    assert viewer.post("/prompts/capital/promote",
                       data={"version": "2", "csrf_token": token}).status_code == 403
    assert viewer.post("/prompts/capital/rollback", data={"csrf_token": token}).status_code == 403
    assert viewer.post("/api/prompts/capital/versions/2/promote", json={},
                       headers={"X-CSRF-Token": token}).status_code == 403
    assert production(app) == 1


def test_a_form_without_the_csrf_token_is_refused(app: Flask,
                                                  clients: dict[str, FlaskClient]) -> None:
    operator = clients["operator"]
    refused = operator.post("/prompts/capital/promote", data={"version": "2"})
    assert refused.status_code == 403 and "CSRF" in refused.get_data(as_text=True)
    wrong = operator.post("/prompts/capital/promote", data={"version": "2", "csrf_token": "x"})
    assert wrong.status_code == 403
    assert operator.post("/prompts/capital/rollback").status_code == 403
    assert production(app) == 1


@pytest.mark.parametrize(("fields", "status", "message"), [
    ({"version": "1"}, 409, "capital@1 is already production"),
    ({"version": "9"}, 404, "prompt capital@9 does not exist"),
    ({}, 400, "choose the version to promote"),
    ({"version": "2", "force": "1", "reason": "why not"}, 403, "admin"),
])
def test_a_refused_promotion_is_a_message_on_the_page(
        app: Flask, clients: dict[str, FlaskClient], fields: dict[str, str], status: int,
        message: str) -> None:
    response = promote(clients["operator"], **fields)
    text = response.get_data(as_text=True)
    assert response.status_code == status, text
    assert 'id="refused"' in text and message in text
    assert 'id="versions"' in text  # the prompt's page, not a bare error
    assert production(app) == 1


def test_nothing_to_roll_back_to_is_a_message(app: Flask,
                                              clients: dict[str, FlaskClient]) -> None:
    operator = clients["operator"]
    response = operator.post("/prompts/capital/rollback", data={"csrf_token": csrf_of(operator)})
    assert response.status_code == 409
    assert "nothing to roll back to" in response.get_data(as_text=True)


def test_a_failed_gate_is_shown_and_an_admin_may_force_it_with_a_reason(
        app: Flask, clients: dict[str, FlaskClient], monkeypatch: pytest.MonkeyPatch) -> None:
    def shorter_is_worse(_db: Any, candidate: Any, _production: Any) -> GateResult:
        return GateResult("answers_not_shorter", False, f"{candidate.ref} cuts answers short")

    monkeypatch.setattr(prompt_promotion, "GATES", (shorter_is_worse,))
    refused = promote(clients["operator"], version="2")
    text = refused.get_data(as_text=True)
    assert refused.status_code == 409 and 'id="refused-gates"' in text
    assert "answers_not_shorter" in text and "capital@2 cuts answers short" in text
    assert production(app) == 1 and audit_actions(app)[-1] == "prompt.promote.refused"

    admin = clients["admin"]
    text = promote(admin, version="2").get_data(as_text=True)
    assert "An admin may promote it anyway" in text and 'id="promote-force"' in text
    no_reason = promote(admin, version="2", force="1")
    assert no_reason.status_code == 400 and "--force needs --reason" in no_reason.get_data(
        as_text=True)
    forced = promote(admin, version="2", force="1", reason="incident 7")
    assert forced.status_code == 303 and production(app) == 2
    assert "prompt.promote.forced" in audit_actions(app)


def test_unknown_prompts_and_versions_are_404(clients: dict[str, FlaskClient]) -> None:
    viewer, operator = clients["viewer"], clients["operator"]
    assert viewer.get("/prompts/nope").status_code == 404
    assert viewer.get("/prompts/capital/9").status_code == 404
    missing = viewer.get("/api/prompts/nope")
    assert missing.status_code == 404 and "does not exist" in missing.get_json()["error"]
    assert viewer.get("/api/prompts/capital/versions/9").status_code == 404
    token = csrf_of(operator)
    assert operator.post("/prompts/nope/promote",
                         data={"version": "1", "csrf_token": token}).status_code == 404
    assert operator.post("/prompts/nope/rollback", data={"csrf_token": token}).status_code == 404


def test_the_api_lists_shows_promotes_and_rolls_back(
        app: Flask, clients: dict[str, FlaskClient]) -> None:
    operator = clients["operator"]
    listing = operator.get("/api/prompts").get_json()
    (capital,) = listing["prompts"]
    assert capital["name"] == "capital" and capital["versions"] == 2
    assert capital["aliases"] == {"production": 1, "staging": 2} and capital["updated_at"]
    version = operator.get("/api/prompts/capital/versions/2").get_json()
    assert version["version"]["parameters"] == {"max_tokens": 8, "temperature": 0.0}
    assert "max_tokens: 8" in version["canonical_yaml"] and version["usage"] is None
    headers = {"X-CSRF-Token": csrf_of(operator)}
    done = operator.post("/api/prompts/capital/versions/2/promote", json={"reason": "r"},
                         headers=headers)
    assert done.status_code == 200 and done.get_json()["move"]["previous"] == 1
    again = operator.post("/api/prompts/capital/versions/2/promote", json={}, headers=headers)
    assert again.status_code == 409 and "already production" in again.get_json()["error"]
    back = operator.post("/api/prompts/capital/rollback", json={}, headers=headers)
    assert back.status_code == 200 and back.get_json()["version"] == 1
    assert production(app) == 1


def test_an_empty_registry_and_log_render(app: Flask, clients: dict[str, FlaskClient]) -> None:
    db = app.config["APPLIANCE_HOME"].db()
    try:
        for table in ("prompt_alias_history", "prompt_aliases", "prompt_versions", "prompts"):
            db.execute(f"DELETE FROM {table}")
        db.conn.commit()
    finally:
        db.close()
    viewer = clients["viewer"]
    page = viewer.get("/prompts")
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert 'id="prompts-empty"' in text and 'id="usage-empty"' in text
    assert viewer.get("/api/prompts").get_json() == {"prompts": [], "usage": [],
                                                      "usage_hours": 24}
    assert viewer.get("/prompts/capital").status_code == 404
