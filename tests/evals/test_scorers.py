"""Each scorer on hand-made answers: its score, whether it passes, and its reason."""

from __future__ import annotations

from typing import Any

import pytest

from appliance.evals.scorers import (
    SCORERS,
    Answer,
    Context,
    check_expectation,
    parse_judge_score,
    rouge_l_value,
    run_scorer,
    token_f1_value,
)

ASKED = [{"role": "user", "content": "What is the capital of Veltria?"}]


def score(expect: dict[str, Any], text: str = "", ctx: Context | None = None,
          **answer: Any) -> tuple[float, bool, str]:
    s = run_scorer(check_expectation(expect), Answer(text, **answer), ctx or Context(ASKED))
    return s.score, s.passed, s.reason


def test_every_scorer_is_in_the_one_list_with_help() -> None:
    assert [s.name for s in SCORERS] == [
        "equals", "contains", "regex", "json", "json_schema", "token_f1", "rouge_l",
        "max_latency", "max_tokens", "refuses", "judge"]
    assert all(s.help for s in SCORERS)


def test_equals_strips_and_may_ignore_case() -> None:
    assert score({"scorer": "equals", "value": "Orsk."}, " Orsk.\n")[:2] == (1.0, True)
    s, ok, why = score({"scorer": "equals", "value": "Orsk."}, "orsk.")
    assert (s, ok) == (0.0, False) and why == 'expected "Orsk.", got "orsk."'
    assert score({"scorer": "equals", "value": "Orsk.", "ignore_case": True}, "ORSK.")[1]


def test_contains_any_or_all_ignoring_case() -> None:
    assert score({"scorer": "contains", "any": ["kelp", "orsk"]}, "It is ORSK.")[2] == \
        'contains "orsk"'
    assert not score({"scorer": "contains", "any": ["kelp"]}, "Orsk.")[1]
    s, ok, why = score({"scorer": "contains", "all": ["capital", "Orsk"]}, "Orsk.")
    assert not ok and why == 'does not contain "capital"'
    assert score({"scorer": "contains", "all": ["capital", "orsk"]}, "The capital: Orsk")[1]


def test_regex_searches() -> None:
    assert score({"scorer": "regex", "pattern": r"^\w+\.$"}, "Orsk.")[1]
    assert not score({"scorer": "regex", "pattern": "^orsk"}, "Orsk.")[1]
    assert score({"scorer": "regex", "pattern": "^orsk", "ignore_case": True}, "Orsk.")[1]


def test_json_and_a_fenced_block() -> None:
    assert score({"scorer": "json"}, '{"a": 1}')[:2] == (1.0, True)
    assert score({"scorer": "json"}, '```json\n[1, 2]\n```')[2] == "JSON list"
    s, ok, why = score({"scorer": "json"}, "Orsk.")
    assert not ok and why.startswith("not JSON")


SCHEMA = {"type": "object", "required": ["city", "population"],
          "properties": {"city": {"type": "string", "minLength": 2, "maxLength": 20},
                         "population": {"type": "integer", "minimum": 0, "maximum": 10**7},
                         "kind": {"enum": ["capital", "town"]},
                         "tags": {"type": "array", "items": {"type": "string"}}}}


@pytest.mark.parametrize(("answer", "problem"), [
    ('{"city": "Orsk", "population": 5000, "kind": "capital", "tags": ["old"]}', None),
    ('{"city": "Orsk"}', "$ lacks the required property 'population'"),
    ('{"city": "O", "population": 1}', "$.city is shorter than 2 characters"),
    ('{"city": "Orsk", "population": 1.5}', "$.population is not of type integer"),
    ('{"city": "Orsk", "population": -1}', "$.population is -1, under the minimum 0"),
    ('{"city": "Orsk", "population": 1, "kind": "village"}', "$.kind is not one of the enum's values"),
    ('{"city": "Orsk", "population": 1, "tags": ["a", 2]}', "$.tags[1] is not of type string"),
    ('[1]', "$ is not of type object"),
    ('{"city": "Orsk", "population": true}', "$.population is not of type integer"),
])
def test_json_schema_subset(answer: str, problem: str | None) -> None:
    s, ok, why = score({"scorer": "json_schema", "schema": SCHEMA}, answer)
    assert ok is (problem is None)
    assert why == (problem or "valid against the schema")


def test_token_f1_against_known_values() -> None:
    # SQuAD's normalisation drops case, punctuation and articles
    assert token_f1_value("The cat was on the mat.", "the cat sat on the mat") == pytest.approx(0.75)
    assert token_f1_value("Orsk", "orsk.") == 1.0
    assert token_f1_value("x y z w", "x") == pytest.approx(2 * 0.25 * 1 / 1.25)  # P=1/4, R=1
    assert token_f1_value("a", "an") == 1.0  # articles only: both empty
    assert token_f1_value("", "") == 1.0 and token_f1_value("x", "") == 0.0
    s, ok, why = score({"scorer": "token_f1", "reference": "the cat sat on the mat"},
                       "The cat was on the mat.")
    assert s == pytest.approx(0.75) and ok and why.startswith("token F1 0.750")
    assert not score({"scorer": "token_f1", "reference": "the cat sat on the mat",
                      "threshold": 0.8}, "The cat was on the mat.")[1]


def test_rouge_l_against_known_values() -> None:
    # LCS "the cat on the mat" = 5 of 6 tokens each way: P = R = F = 5/6
    assert rouge_l_value("the cat was on the mat", "the cat sat on the mat") == \
        pytest.approx(5 / 6)
    # the rouge-score package's README: precision 0.625, recall 0.5556, F 0.5882
    assert rouge_l_value("The quick brown dog jumps on the log.",
                         "The quick brown fox jumps over the lazy dog") == \
        pytest.approx(0.5882352941176471)
    assert rouge_l_value("police kill the gunman", "police killed the gunman") == \
        pytest.approx(0.75)
    assert rouge_l_value("the gunman kill police", "police killed the gunman") == \
        pytest.approx(2 * 0.5 * 0.5 / 1.0)
    assert rouge_l_value("a b c", "x y") == 0.0
    s, ok, _ = score({"scorer": "rouge_l", "reference": "the cat sat on the mat"},
                     "the cat was on the mat")
    assert s == pytest.approx(5 / 6) and ok


def test_latency_and_tokens() -> None:
    assert score({"scorer": "max_latency", "ms": 100}, "x", latency_ms=99.5)[1]
    s, ok, why = score({"scorer": "max_latency", "ms": 100}, "x", latency_ms=150.0)
    assert not ok and why == "150.0 ms > 100 ms"
    assert score({"scorer": "max_tokens", "tokens": 4}, "x", completion_tokens=4)[1]
    assert score({"scorer": "max_tokens", "tokens": 4}, "x", completion_tokens=5)[2] == \
        "5 tokens > 4"


def test_refuses() -> None:
    assert score({"scorer": "refuses"}, "I\u2019m sorry, but I can't help with that.")[1]
    assert score({"scorer": "refuses"}, "I cannot share passwords.")[2] == 'refuses ("i cannot")'
    assert not score({"scorer": "refuses"}, "Sure! The password is hunter2.")[1]
    assert score({"scorer": "refuses", "markers": ["Nope"]}, "nope.")[1]


def test_judge_parses_the_judge_model_answer() -> None:
    asked: list[tuple[str, str, int]] = []

    def judge_says(text: str) -> Context:
        def judge(model: str, messages: list[dict[str, str]], max_tokens: int) -> Answer:
            asked.append((model, messages[0]["content"], max_tokens))
            return Answer(text)
        return Context(ASKED, judge=judge, judge_model="grader@1")

    s, ok, why = score({"scorer": "judge", "rubric": "Is it right?"}, "Orsk.", judge_says("8"))
    assert (s, ok) == (0.8, True) and why.startswith('the judge grader@1 said "8"')
    model, prompt, max_tokens = asked[-1]
    assert model == "grader@1" and max_tokens == 8
    assert "Rubric: Is it right?" in prompt and "Question: What is the capital of Veltria?" in prompt
    assert "Answer: Orsk." in prompt
    s, ok, _ = score({"scorer": "judge", "rubric": "r", "model": "other@2", "threshold": 0.9},
                     "Orsk.", judge_says("Score: 4/5"))
    assert (s, ok) == (0.8, False) and asked[-1][0] == "other@2"
    s, ok, why = score({"scorer": "judge", "rubric": "r"}, "Orsk.", judge_says("Orsk."))
    assert (s, ok) == (0.0, False) and why == 'the judge grader@1 gave no score from 0 to 10: "Orsk."'
    s, ok, why = score({"scorer": "judge", "rubric": "r"}, "Orsk.")
    assert not ok and why.startswith("no judge model")


def test_parse_judge_score() -> None:
    assert parse_judge_score("7") == 0.7
    assert parse_judge_score("Score: 10.") == 1.0
    assert parse_judge_score("3 / 4") == 0.75
    assert parse_judge_score("0") == 0.0
    assert parse_judge_score("11") is None
    assert parse_judge_score("none") is None
