"""The Guardrails page and /api/guardrails: verdicts from the request log counted over
time, per check and per model and prompt version, the last triggered ones escaped, the
policy and classifier in force, a bad ?since=, an empty log and an old database."""

from __future__ import annotations

import json
import time
from typing import Any

from flask.testing import FlaskClient
from helpers.console import Template, client_with_session, make_app
from helpers.llm_usage import log_llm, row

from appliance.monitoring import guardrail_verdicts
from appliance.storage.home import Home


def verdict(stage: str, action: str | None, *checks: tuple[str, str, str], ms: float = 0.5,
            notes: list[str] | None = None) -> dict[str, Any]:
    d: dict[str, Any] = {"stage": stage, "action": action, "triggered": [c for c, _, _ in checks],
                         "ms": ms}
    if checks:
        d["results"] = [{"check": c, "triggered": True, "action": a, "score": None, "detail": t}
                        for c, a, t in checks]
    if notes:
        d["notes"] = notes
    return d


def guarded(ts: float, *verdicts: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return row(ts, guardrail=json.dumps(list(verdicts)), **fields)


def seed_verdicts(home: Home, now: float) -> None:
    clean = [verdict("input", None), verdict("output", None)]
    log_llm(home, [
        guarded(now - 7200, *clean),
        guarded(now - 7100, *clean, prompt_ref="support@2"),
        guarded(now - 3000, verdict("input", "block",
                                    ("injection_patterns", "block", "ignore previous instructions")),
                status=400, finish_reason="guardrail", prompt_ref="support@2"),
        guarded(now - 600, verdict("input", None),
                verdict("output", "redact", ("secrets", "redact", "aws_access_key"),
                        ("personal_data", "flag", "email"))),
        guarded(now - 60, verdict("input", "flag",
                                  ("personal_data", "flag", "<script>alert(1)</script>" + "x" * 400)),
                verdict("output", None), model="other", version=3),
        row(now - 30),  # guardrails off: no verdicts, not counted
        guarded(now - 5 * 86400, verdict("input", "block", ("canary", "block", "old"))),
    ])


def test_the_page_counts_verdicts_and_escapes_details(console_home: Home,
                                                       clients: dict[str, FlaskClient]) -> None:
    now = time.time()
    seed_verdicts(console_home, now)
    viewer = clients["viewer"]
    api = viewer.get("/api/guardrails").get_json()
    assert api["bucket"] == "hour"
    assert api["totals"] == {"checked": 5, "blocked": 1, "redacted": 1, "flagged": 1}
    assert sum(b["checked"] for b in api["buckets"]) == 5
    checks = {(c["stage"], c["check"], c["action"]): c["count"] for c in api["checks"]}
    assert checks == {("input", "injection_patterns", "block"): 1,
                      ("output", "secrets", "redact"): 1, ("output", "personal_data", "flag"): 1,
                      ("input", "personal_data", "flag"): 1}
    models = {(m["model"], m["version"]): m for m in api["models"]}
    assert models[("chat", 1)]["checked"] == 4 and models[("other", 3)]["flagged"] == 1
    assert api["prompts"] == [{"prompt_ref": "support@2", "checked": 2, "blocked": 1,
                               "redacted": 0, "flagged": 0}]
    recent = api["recent"]
    assert [r["action"] for r in recent] == ["flag", "redact", "block"]  # newest first
    assert recent[0]["model"] == "other" and len(recent[0]["detail"]) <= 240
    assert recent[1]["checks"] == ["secrets", "personal_data"]
    assert api["in_force"]["policies"] is None

    page = viewer.get("/guardrails")
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert 'href="/guardrails"' in text  # in the nav
    assert "<script>alert" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert '<div id="verdicts-chart"><svg' in text and "verdicts per hour" in text
    assert "built-in default" in text and "injection_patterns" in text
    assert "support@2" in text and "other@3" in text

    month = viewer.get("/api/guardrails?since=30d").get_json()
    assert month["bucket"] == "day" and month["totals"]["checked"] == 6
    assert "verdicts per day" in viewer.get("/guardrails?since=7d").get_data(as_text=True)


def test_a_bad_since_is_a_400_on_the_page_and_the_api(clients: dict[str, FlaskClient]) -> None:
    page = clients["viewer"].get("/guardrails?since=soon")
    assert page.status_code == 400
    text = page.get_data(as_text=True)
    assert 'id="guardrails-error"' in text and "since &#39;soon&#39;" in text and "--since" not in text
    api = clients["viewer"].get("/api/guardrails?since=-1d")
    assert api.status_code == 400 and "error" in api.get_json()


def test_an_empty_log_renders_with_what_is_in_force(clients: dict[str, FlaskClient]) -> None:
    page = clients["viewer"].get("/guardrails")
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert 'id="guardrails-empty"' in text and "<svg" not in text
    assert "built-in default" in text
    assert "guardrail-injection" in text and "appliance guardrails train" in text


def test_the_policy_file_and_classifier_from_the_configuration(console_home: Home,
                                                               template: Template) -> None:
    app = make_app(console_home, **{"guardrails.policies": "/etc/appliance/guard.yaml",
                                    "guardrails.classifier": "churn@1"})
    viewer = client_with_session(app, template.sessions["viewer"])
    force = viewer.get("/api/guardrails").get_json()["in_force"]
    assert force["policies"] == "/etc/appliance/guard.yaml"
    assert force["classifier"]["ref"] == "churn@1" and force["classifier"]["metrics"]
    text = viewer.get("/guardrails").get_data(as_text=True)
    assert "/etc/appliance/guard.yaml" in text and "built-in default" not in text
    assert 'href="/models/churn/1">churn@1</a>' in text and 'id="classifier-metrics"' in text


def test_an_old_database_without_the_column_reads_as_empty(console_home: Home,
                                                          clients: dict[str, FlaskClient]) -> None:
    mon = console_home.monitoring_db()
    try:
        mon.execute("DROP INDEX IF EXISTS llm_requests_prompt_ts")
        mon.execute("ALTER TABLE llm_requests DROP COLUMN guardrail")
        mon.execute("ALTER TABLE llm_requests DROP COLUMN prompt_ref")
        got = guardrail_verdicts.summary(mon, time.time() - 86400)
    finally:
        mon.close()
    assert got["totals"]["checked"] == 0 and "older database" in got["note"]
    page = clients["viewer"].get("/guardrails")
    assert page.status_code == 200 and "older database" in page.get_data(as_text=True)
