"""The prompt registry: versions, checks that name the key at fault, aliases, promotion."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers.llm import CAPITAL_PROMPT as CAPITAL

from appliance import prompts
from appliance.audit import service as audit_service
from appliance.auth import Principal, Role
from appliance.auth.users import add_user
from appliance.cli import _common
from appliance.errors import BadInput, Conflict, Forbidden
from appliance.prompts import GateResult
from appliance.storage.db import Database
from appliance.storage.home import Home

ADMIN = Principal("ada", Role.ADMIN)
OPERATOR = Principal("otto", Role.OPERATOR)


def _actions(db: Database, prefix: str = "prompt.") -> list[str]:
    return [e["action"] for e in audit_service.entries(db) if e["action"].startswith(prefix)]


def _add(db: Database, text: str = CAPITAL, name: str = "capital"
         ) -> prompts.PromptVersion:
    return prompts.add_prompt(db, name, text.encode(), actor="tester")[0]


# ---- versions ------------------------------------------------------------------------------


def test_add_numbers_versions_and_the_same_content_gives_back_the_same_one(
        db: Database) -> None:
    first, created = prompts.add_prompt(db, "capital", CAPITAL.encode(), actor="tester")
    assert created and first.ref == "capital@1"
    again, created = prompts.add_prompt(db, "capital", CAPITAL.encode(), actor="tester")
    assert not created and again.id == first.id
    # Comments and layout are not content: the canonical form is the same.
    relaid = "# a comment\n" + CAPITAL.replace("temperature: 0", "temperature: 0.0  # greedy")
    assert prompts.add_prompt(db, "capital", relaid.encode(), actor="t")[0].ref == "capital@1"
    second = _add(db, CAPITAL.replace("briefly", "in one word"))
    assert second.ref == "capital@2" and second.digest != first.digest
    assert [v.version for v in prompts.list_versions(db, "capital")] == [2, 1]
    assert _actions(db) == ["prompt.register", "prompt.register"]
    spec = prompts.resolve(db, "capital@1").spec
    assert spec.model == "chat" and spec.parameter_dict == {"temperature": 0, "max_tokens": 16}
    assert spec.render({"country": "Veltria"})[1] == {
        "role": "user", "content": "What is the capital of Veltria?"}


def test_rendering_is_plain_substitution_with_defaults(db: Database) -> None:
    text = CAPITAL.replace("description: The country asked about.",
                           "default: Veltria")
    spec = _add(db, text).spec
    assert spec.render({})[1]["content"] == "What is the capital of Veltria?"
    # A value is inserted as it is: never read again for placeholders, never run.
    assert spec.render({"country": "{{country}} {% x %}"})[1]["content"] == (
        "What is the capital of {{country}} {% x %}?")
    with pytest.raises(BadInput, match="unknown variable 'city'") as info:
        spec.render({"city": "Orsk"})
    assert info.value.param == "variables.city"


BAD = [
    ("temprature: 0\n" + CAPITAL, "temprature (line 1): unknown key 'temprature'"),
    (CAPITAL.replace("role: user", "role: boss"), "messages[1].role (line 6)"),
    (CAPITAL.replace("content: You", "name: x\n    content: You"),
     "messages[0].name (line 5): unknown key"),
    (CAPITAL.replace("  - role: system\n", "  - ").replace("    content: You answer", "  "
                                                          "content: You answer"),
     "messages[0] (line 4): missing key 'role'"),
    (CAPITAL.replace("{{country}}", "{{city}}"),
     "messages[1].content (line 7): uses the variable 'city'"),
    (CAPITAL.replace("asked about.\n", "asked about.\n  unused:\n"),
     "variables.unused (line 11): declared but used in no message"),
    (CAPITAL.replace("{{country}}", "{{country}} {{ two words }}"),
     "messages[1].content (line 7): '{{ two words }}' is not a placeholder"),
    (CAPITAL.replace("{{country}}?", "{{country}}? {{oops"), "never closed"),
    (CAPITAL.replace("temperature: 0", "temperature: 3"),
     "parameters.temperature (line 12): must be >= 0 and <= 2"),
    (CAPITAL.replace("temperature: 0", "top_p: 0"), "parameters.top_p (line 12)"),
    (CAPITAL.replace("max_tokens: 16", "max_tokens: ten"),
     "parameters.max_tokens (line 13): must be an integer"),
    (CAPITAL.replace("max_tokens: 16", "stop: [a, b, c, d, e]"), "parameters.stop (line 13)"),
    (CAPITAL.replace("max_tokens: 16", "frequency_penalty: 1"),
     "parameters.frequency_penalty (line 13): unknown key"),
    (CAPITAL.replace("model: chat\n", ""), "missing key 'model'"),
    (CAPITAL.replace("model: chat", "model: 'bad name!'"), "model (line 2)"),
    (CAPITAL.replace("description: The country asked about.", "kind: text"),
     "variables.country.kind (line 10): unknown key"),
    (CAPITAL.replace("description: The country asked about.", "default: [a]"),
     "variables.country.default (line 10): must be a string or a number"),
    (CAPITAL + "response_schema: {type: map}\n", "response_schema.type (line 14)"),
    (CAPITAL + "model: other\n", "model (line 14): appears twice"),
    ("messages: [\n", "not valid YAML (line"),
    ("", "the file is empty"),
    ("- a list\n", "the file: must be a mapping"),
]


@pytest.mark.parametrize(("text", "expected"), BAD, ids=[e for _, e in BAD])
def test_a_bad_file_exits_2_naming_the_key_and_registers_nothing(
        runner: Any, db: Database,
        prompt_file: Callable[[str], Path], text: str, expected: str) -> None:
    path = prompt_file(text)
    result = runner("prompts", "add", "capital", str(path))
    assert result.exit_code == 2, result.output
    assert expected in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert db.execute("SELECT COUNT(*) FROM prompts").fetchone()[0] == 0
    assert _actions(db) == []


# ---- the command line -------------------------------------------------------------------


def test_add_list_show_diff_and_alias_on_the_command_line(
        runner: Any, db: Database,
        prompt_file: Callable[[str], Path]) -> None:
    r = runner("prompts", "add", "capital", str(prompt_file(CAPITAL)))
    assert r.exit_code == 0 and r.output.strip() == "capital@1"
    r = runner("prompts", "add", "capital", str(prompt_file(CAPITAL)))
    assert "already registered as capital@1" in r.stderr
    changed = CAPITAL.replace("max_tokens: 16", "max_tokens: 8")
    r = runner("prompts", "add", "capital", str(prompt_file(changed)), "--json")
    doc = json.loads(r.output)
    assert doc["ref"] == "capital@2" and doc["created"] and doc["parameters"]["max_tokens"] == 8

    r = runner("prompts", "alias", "capital@2", "staging", "--reason", "try it")
    assert r.output.strip() == "capital@staging: - -> 2"
    r = runner("prompts", "list", "--json")
    [row] = json.loads(r.output)
    assert row["name"] == "capital" and row["latest"] == 2 and row["versions"] == 2
    assert row["aliases"] == {"staging": 2} and row["model"] == "chat"
    assert "capital" in runner("prompts", "list").output
    versions = json.loads(runner("prompts", "list", "capital", "--json").output)
    assert [v["ref"] for v in versions] == ["capital@2", "capital@1"]

    shown = json.loads(runner("prompts", "show", "capital@staging", "--json").output)
    assert shown["ref"] == "capital@2" and shown["aliases"] == ["staging"]
    assert shown["variables"] == {"country": {"description": "The country asked about.",
                                              "default": None}}
    text = runner("prompts", "show", "capital@1").output
    assert text.startswith("# capital@1  sha256:") and "max_tokens: 16" in text

    r = runner("prompts", "diff", "capital@1", "capital@staging")
    assert r.exit_code == 0
    lines = r.output.splitlines()
    assert lines[:2] == ["--- capital@1", "+++ capital@2"]
    assert "-  max_tokens: 16" in lines and "+  max_tokens: 8" in lines
    same = runner("prompts", "diff", "capital@1", "capital@1").output
    assert "are the same" in same

    r = runner("prompts", "alias", "capital@1", "production")
    assert r.exit_code == 2 and "prompts promote" in r.stderr
    r = runner("prompts", "alias", "capital@1", "9lives")
    assert r.exit_code == 2 and "invalid alias" in r.stderr
    r = runner("prompts", "show", "nothing@1")
    assert r.exit_code == 2 and "does not exist" in r.stderr
    history = json.loads(runner("prompts", "history", "capital", "--json").output)
    assert [(h["alias"], h["previous"], h["version"], h["reason"]) for h in history] == [
        ("staging", None, 2, "try it")]
    assert _actions(db) == ["prompt.register", "prompt.register", "prompt.alias.set"]


# ---- promotion -----------------------------------------------------------------------------


def test_promote_and_rollback_move_production_with_audit_entries(
        db: Database) -> None:
    one = _add(db)
    two = _add(db, CAPITAL.replace("briefly", "tersely"))
    three = _add(db, CAPITAL.replace("briefly", "in a word"))
    done = prompts.promote(db, one.ref, OPERATOR)
    assert done.move.version == 1 and done.move.previous is None and not done.forced
    with pytest.raises(Conflict, match="already production"):
        prompts.promote(db, one.ref, OPERATOR)
    prompts.promote(db, two.ref, OPERATOR)
    prompts.promote(db, three.ref, ADMIN, reason="better wording")
    assert prompts.resolve(db, "capital").version == 3
    move = prompts.rollback(db, "capital", OPERATOR, reason="worse answers")
    assert (move.previous, move.version) == (3, 2)
    move = prompts.rollback(db, "capital", OPERATOR)  # two promotions back, not an undo
    assert (move.previous, move.version) == (2, 1)
    with pytest.raises(Conflict, match="nothing to roll back to"):
        prompts.rollback(db, "capital", OPERATOR)
    assert _actions(db)[3:] == [
        "prompt.promote", "prompt.alias.set", "prompt.promote", "prompt.alias.set",
        "prompt.promote", "prompt.alias.set", "prompt.alias.set", "prompt.rollback",
        "prompt.alias.set", "prompt.rollback"]
    entry = audit_service.entries(db, action="prompt.rollback")[0]
    details = entry["details"]
    details = json.loads(details) if isinstance(details, str) else details
    assert entry["actor"] == "otto" and details == {"from": 3, "to": 2,
                                                    "reason": "worse answers"}
    history = prompts.alias_history(db, "capital", "production")
    assert [(h["previous"], h["version"]) for h in history] == [
        (None, 1), (1, 2), (2, 3), (3, 2), (2, 1)]
    assert history[3]["reason"] == "rollback of capital@3: worse answers"


@pytest.mark.parametrize("role", [Role.VIEWER, Role.APPROVER])
def test_promote_and_rollback_are_refused_without_the_permission(
        db: Database, role: Role) -> None:
    one = _add(db)
    two = _add(db, CAPITAL.replace("briefly", "tersely"))
    prompts.promote(db, one.ref, ADMIN)
    prompts.promote(db, two.ref, ADMIN)
    who = Principal("vic", role)
    with pytest.raises(Forbidden, match=r"needs prompts\.promote"):
        prompts.promote(db, one.ref, who)
    with pytest.raises(Forbidden, match=r"needs prompts\.rollback"):
        prompts.rollback(db, "capital", who)
    assert prompts.resolve(db, "capital").version == 2
    assert "vic" not in {e["actor"] for e in audit_service.entries(db)}


def test_a_failed_gate_refuses_and_only_an_admin_with_a_reason_forces(
        db: Database) -> None:
    """The gate list is empty for now; a gate given in its place is run like one."""
    one = _add(db)

    def never(db: Database, candidate: prompts.PromptVersion,
              production: prompts.PromptVersion | None) -> GateResult:
        return GateResult("eval:never", False, "scored 0.1 < 0.9")

    assert prompts.GATES == ()
    with pytest.raises(prompts.PromptPromotionRefused, match="eval:never"):
        prompts.promote(db, one.ref, OPERATOR, gates=[never])
    with pytest.raises(Forbidden):
        prompts.promote(db, one.ref, OPERATOR, gates=[never], force=True, reason="x")
    with pytest.raises(BadInput, match="--force needs --reason"):
        prompts.promote(db, one.ref, ADMIN, gates=[never], force=True)
    assert prompts.alias_history(db, "capital") == []
    done = prompts.promote(db, one.ref, ADMIN, gates=[never], force=True, reason="urgent")
    assert done.forced and done.gates[0].gate == "eval:never"
    assert _actions(db)[1:] == ["prompt.promote.refused", "prompt.promote.forced",
                                "prompt.alias.set"]


def test_history_tells_which_version_answered_at_a_time(
        db: Database, runner: Any) -> None:
    one = _add(db)
    two = _add(db, CAPITAL.replace("briefly", "tersely"))
    prompts.promote(db, one.ref, ADMIN)
    prompts.promote(db, two.ref, ADMIN)
    moves = prompts.alias_history(db, "capital", "production")
    first, second = moves[0]["at"], moves[1]["at"]
    assert prompts.alias_at(db, "capital", "production", "2000-01-01T00:00:00Z") is None
    assert prompts.alias_at(db, "capital", "production", first) == 1
    assert prompts.alias_at(db, "capital", "production", second) == 2
    r = runner("prompts", "history", "capital", "--at", first)
    assert r.output.strip() == "capital@1"
    r = runner("prompts", "history", "capital", "--at", "2000-01-01", "--json")
    assert json.loads(r.output)["version"] is None
    r = runner("prompts", "history", "capital", "--at", "yesterday")
    assert r.exit_code == 2 and "invalid time" in r.stderr
    r = runner("prompts", "history", "capital")
    assert r.output.count("production") == 2


def test_the_command_line_promotes_as_the_os_users_role(
        home: Home, db: Database, runner: Any,
        prompt_file: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch) -> None:
    runner("prompts", "add", "capital", str(prompt_file(CAPITAL)))
    add_user(db, "vera", "viewer", "a long enough password 1", actor="tester")
    monkeypatch.setattr(_common, "os_user", lambda: "vera")
    r = runner("prompts", "promote", "capital@1")
    assert r.exit_code == 1 and "needs prompts.promote" in r.stderr
    monkeypatch.setattr(_common, "os_user", lambda: "stranger")
    r = runner("prompts", "promote", "capital@1")
    assert r.exit_code == 1 and "not an appliance user" in r.stderr
    monkeypatch.setattr(_common, "os_user", lambda: "root")
    r = runner("prompts", "promote", "capital@1")
    assert r.exit_code == 0 and "capital@1 is now production" in r.output
    r = runner("prompts", "rollback", "capital")
    assert r.exit_code == 1 and "nothing to roll back to" in r.stderr
    r = runner("prompts", "promote", "capital")
    assert r.exit_code == 2 and "capital@VERSION" in r.stderr
