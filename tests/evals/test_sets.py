"""Evaluation sets: versions by content, and every bad line refused with its line and field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from appliance.errors import BadInput
from appliance.evals.sets import add_evalset, get_evalset_version, load_cases
from appliance.storage.home import Home

ASK = [{"role": "user", "content": "What is the capital of Veltria?"}]


def line(**fields: object) -> str:
    case: dict[str, object] = {"messages": ASK, "expect": [{"scorer": "equals", "value": "Orsk."}]}
    case.update(fields)
    return json.dumps({k: v for k, v in case.items() if v is not None})


def write(path: Path, *lines: str) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def test_the_same_bytes_give_back_the_same_version(home: Home, tmp_path: Path) -> None:
    first = write(tmp_path / "a.jsonl", line(id="veltria"), "", line(id="two"))
    with home.db() as db:
        v1, created1 = add_evalset(db, home.blobs, "facts", first, actor="t")
        again, created_again = add_evalset(db, home.blobs, "facts", first, actor="t")
        second = write(tmp_path / "b.jsonl", line(id="veltria"))
        v2, created2 = add_evalset(db, home.blobs, "facts", second, actor="t")
        latest = get_evalset_version(db, "facts")
        actions = [r["action"] for r in db.query("SELECT action FROM audit_log")]
    assert (v1.ref, created1) == ("facts@1", True)
    assert (again.ref, created_again) == ("facts@1", False)
    assert (v2.ref, created2) == ("facts@2", True)
    assert latest.ref == "facts@2" and v1.cases == 2 and v1.scorers == {"equals": 2}
    assert actions.count("evalset.register") == 2
    cases = load_cases(home.blobs, v1)
    assert [(c.line, c.id) for c in cases] == [(1, "veltria"), (3, "two")]


def test_cli_add_list_show(runner, tmp_path: Path) -> None:
    f = write(tmp_path / "s.jsonl", line(), line(id="v", messages=None, variables={"x": "1"}))
    r = runner("evals", "add", "facts", str(f))
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == "facts@1"
    r = runner("evals", "add", "facts", str(f))
    assert r.exit_code == 0 and "already registered as facts@1" in r.output
    listed = json.loads(runner("evals", "list", "--json").stdout)
    assert [(x["name"], x["latest"], x["latest_cases"]) for x in listed] == [("facts", 1, 2)]
    shown = json.loads(runner("evals", "show", "facts@1", "--json").stdout)
    assert shown["digest"] and [c["id"] for c in shown["case_list"]] == ["line-1", "v"]
    text = runner("evals", "show", "facts").stdout
    assert "facts@1" in text and "variables" in text
    missing = runner("evals", "show", "nope")
    assert missing.exit_code != 0 and "evaluation set nope does not exist" in missing.output


@pytest.mark.parametrize(("bad", "says"), [
    ("{not json", "line 2: not JSON"),
    ("[1, 2]", "line 2: must be a JSON object"),
    (line(expected=[]), "line 2: unknown field 'expected'"),
    (line(messages=None), "line 2: give 'messages' (for a model) or 'variables'"),
    (line(variables={"a": "b"}), "line 2: give 'messages' (for a model) or 'variables' (for a prompt), not both"),
    (line(messages=[{"role": "robot", "content": "hi"}]), "line 2: messages[0].role must be one of"),
    (line(messages=None, variables={"a": [1]}), "line 2: variables.a must be a string"),
    (line(expect=[]), "line 2: 'expect' must be a non-empty list"),
    (line(expect=[{"scorer": "bleu"}]), "line 2: expect[0].scorer: unknown scorer 'bleu'"),
    (line(expect=["equals"]), "line 2: expect[0]: must be an object"),
    (line(expect=[{"scorer": "equals"}]), "line 2: expect[0].value: argument 'value' is required"),
    (line(expect=[{"scorer": "equals", "value": "x", "case": 1}]), "line 2: expect[0].case: unknown argument 'case'"),
    (line(expect=[{"scorer": "contains"}]), "line 2: expect[0].any: give exactly one of 'any' or 'all'"),
    (line(expect=[{"scorer": "contains", "any": ["a"], "all": ["b"]}]), "exactly one of 'any' or 'all'"),
    (line(expect=[{"scorer": "contains", "any": "Orsk"}]), "expect[0].any: 'any' must be a non-empty list"),
    (line(expect=[{"scorer": "regex", "pattern": "(unclosed"}]), "expect[0].pattern: 'pattern' is not a regular expression"),
    (line(expect=[{"scorer": "json_schema", "schema": {"type": "thing"}}]), "expect[0].schema: 'schema': schema.type must be one of"),
    (line(expect=[{"scorer": "json_schema", "schema": {"pattern": "^a"}}]), "keyword 'pattern' is not supported"),
    (line(expect=[{"scorer": "token_f1", "reference": "x", "threshold": 2}]), "expect[0].threshold: 'threshold' must be a number from 0 to 1"),
    (line(expect=[{"scorer": "rouge_l"}]), "expect[0].reference: argument 'reference' is required"),
    (line(expect=[{"scorer": "max_latency", "ms": "fast"}]), "expect[0].ms: 'ms' must be a number"),
    (line(expect=[{"scorer": "max_tokens", "tokens": -1}]), "expect[0].tokens: 'tokens' must be a whole number"),
    (line(expect=[{"scorer": "refuses", "markers": []}]), "expect[0].markers:"),
    (line(expect=[{"scorer": "judge"}]), "expect[0].rubric: argument 'rubric' is required"),
    (line(expect=[{"scorer": "judge", "rubric": "r", "model": "chat"}]), "expect[0].model: 'model' must be NAME@VERSION or NAME@ALIAS"),
    (line(params={"max_tokens": 0}), "line 2: params.max_tokens must be a whole number of at least 1"),
    (line(params={"temperature": 9}), "line 2: params.temperature must be a number from 0 to 2"),
    (line(params={"top_k": 3}), "line 2: params: unknown parameter 'top_k'"),
    (line(id="line-1"), "line 2: id 'line-1' is already the id of line 1"),
])
def test_a_bad_line_is_refused_naming_the_line_and_field(runner, home: Home, tmp_path: Path,
                                                         bad: str, says: str) -> None:
    f = write(tmp_path / "bad.jsonl", line(), bad)
    r = runner("evals", "add", "facts", str(f))
    assert r.exit_code == 2, r.output
    assert says in r.output
    with home.db() as db:
        assert list(db.query("SELECT * FROM evalset_versions")) == []


def test_empty_and_non_utf8_files_are_refused(home: Home, tmp_path: Path) -> None:
    with home.db() as db:
        with pytest.raises(BadInput, match="holds no cases"):
            add_evalset(db, home.blobs, "e", write(tmp_path / "e.jsonl", ""), actor="t")
        (tmp_path / "u.jsonl").write_bytes(line().encode() + b"\n\xff\n")
        with pytest.raises(BadInput, match="line 2: not UTF-8"):
            add_evalset(db, home.blobs, "e", tmp_path / "u.jsonl", actor="t")
        with pytest.raises(BadInput, match="no such file"):
            add_evalset(db, home.blobs, "e", tmp_path / "missing.jsonl", actor="t")
