"""A chat completion that names a prompt, answered by the real daemon and the small model."""

from __future__ import annotations

import sqlite3
from typing import Any

from helpers.llm import ADMIN, CAPITAL_PROMPT, wait_for
from helpers.serving import call

from appliance import prompts
from appliance.serving.http.transport import ServerThread
from appliance.storage.home import Home

# The small model was taught questions alone: a system message leads it astray.
CAPITAL = CAPITAL_PROMPT.replace("  - role: system\n    content: You answer briefly.\n", "")
assert "system" not in CAPITAL


def chat(server: ServerThread, body: dict[str, Any]) -> tuple[int, Any]:
    status, _headers, doc = call(server, "POST", "/v1/chat/completions", body)
    return status, doc


def register(home: Home, text: str = CAPITAL, *, promote: bool = True) -> str:
    with home.db() as db:
        pv, _ = prompts.add_prompt(db, "capital", text.encode(), actor="tester")
        if promote:
            prompts.promote(db, pv.ref, ADMIN)
    return pv.ref


def log_rows(home: Home) -> list[dict[str, Any]]:
    conn = sqlite3.connect(home.monitoring_db_path)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM llm_requests ORDER BY id")]
    finally:
        conn.close()


def test_a_prompt_renders_answers_and_is_logged(served: ServerThread, home: Home) -> None:
    register(home)
    status, doc = chat(served, {"model": "prompts:/capital@production",
                                "variables": {"country": "Veltria"}})
    assert status == 200, doc
    assert doc["choices"][0]["message"]["content"] == " Orsk."
    assert doc["model"] == "chat"
    assert doc["appliance"]["prompt"] == "capital@1"
    assert doc["appliance"]["model_version"] == 1
    # By version, and by name alone (production), the same.
    for ref in ("prompts:/capital@1", "prompts:/capital"):
        status, doc = chat(served, {"model": ref, "variables": {"country": "Veltria"}})
        assert status == 200 and doc["appliance"]["prompt"] == "capital@1", doc

    def logged() -> list[dict[str, Any]]:
        return [r for r in log_rows(home) if r["prompt_ref"] == "capital@1"]

    rows = wait_for(lambda: len(logged()) == 3 and logged(), what="three log rows")
    assert {(r["model"], r["version"], r["status"]) for r in rows} == {("chat", 1, 200)}


def test_the_prompts_parameters_are_defaults_the_request_overrides(
        served: ServerThread, home: Home) -> None:
    register(home)
    body = {"model": "prompts:/capital@1", "variables": {"country": "Veltria"}}
    status, doc = chat(served, {**body, "max_tokens": 1})
    assert status == 200 and doc["usage"]["completion_tokens"] == 1, doc
    assert doc["choices"][0]["finish_reason"] == "length"
    # The client's messages follow the template's: here, the model's answer and a question.
    status, doc = chat(served, {**body, "messages": [
        {"role": "assistant", "content": " Orsk."},
        {"role": "user", "content": "What is the capital of Veltria?"}]})
    assert status == 200 and doc["usage"]["prompt_tokens"] > 20, doc


def test_variables_missing_or_unknown_are_400s_naming_them(
        served: ServerThread, home: Home) -> None:
    register(home)
    status, doc = chat(served, {"model": "prompts:/capital@1"})
    assert status == 400 and doc["error"]["param"] == "variables.country", doc
    assert "'country' is missing" in doc["error"]["message"]
    assert doc["error"]["type"] == "invalid_request_error"
    status, doc = chat(served, {"model": "prompts:/capital@1",
                                "variables": {"country": "Veltria", "city": "Orsk"}})
    assert status == 400 and doc["error"]["param"] == "variables.city", doc
    status, doc = chat(served, {"model": "prompts:/capital@1", "variables": {"country": []}})
    assert status == 400 and doc["error"]["param"] == "variables.country", doc
    status, doc = chat(served, {"model": "prompts:/capital@1", "variables": ["Veltria"]})
    assert status == 400 and doc["error"]["param"] == "variables", doc
    status, doc = chat(served, {"model": "chat", "variables": {"country": "Veltria"},
                                "messages": [{"role": "user", "content": "hi"}]})
    assert status == 400 and doc["error"]["param"] == "variables", doc
    status, _h, doc = call(served, "POST", "/v1/completions",
                           {"model": "prompts:/capital@1", "prompt": "x"})
    assert status == 400 and doc["error"]["param"] == "model", doc


def test_an_unknown_prompt_or_a_model_not_served_is_a_404(
        served: ServerThread, home: Home) -> None:
    for ref in ("prompts:/nothing@production", "prompts:/nothing@3"):
        status, doc = chat(served, {"model": ref})
        assert status == 404 and doc["error"]["code"] == "model_not_found", doc
        assert "'nothing" in doc["error"]["message"] and doc["error"]["param"] == "model"
    register(home)
    status, doc = chat(served, {"model": "prompts:/capital@staging"})
    assert status == 404 and "capital@staging" in doc["error"]["message"], doc
    status, doc = chat(served, {"model": "prompts:/capital@bad alias"})
    assert status == 400 and doc["error"]["param"] == "model", doc
    other = register(home, CAPITAL.replace("model: chat", "model: elsewhere"), promote=False)
    status, doc = chat(served, {"model": f"prompts:/{other}",
                                "variables": {"country": "Veltria"}})
    assert status == 404 and doc["error"]["code"] == "model_not_found", doc
    assert "'elsewhere'" in doc["error"]["message"] and "not served" in doc["error"]["message"]


def test_a_moved_production_alias_is_picked_up_without_a_restart(
        served: ServerThread, home: Home) -> None:
    register(home)
    body = {"model": "prompts:/capital", "variables": {"country": "Veltria"}}
    assert chat(served, body)[1]["appliance"]["prompt"] == "capital@1"
    second = register(home, CAPITAL.replace("Asks for", "Asks after"))
    assert second == "capital@2"

    def answered_by(ref: str) -> bool:
        status, doc = chat(served, body)
        assert status == 200, doc
        return bool(doc["appliance"]["prompt"] == ref)

    wait_for(lambda: answered_by("capital@2"), what="capital@2 to answer")
    with home.db() as db:
        prompts.rollback(db, "capital", ADMIN)
    wait_for(lambda: answered_by("capital@1"), what="capital@1 to answer again")
