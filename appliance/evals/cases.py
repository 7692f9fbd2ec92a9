"""The cases of an evaluation set: one JSON object a line, checked line by line.

A line holds ``messages`` (OpenAI's chat messages, for a model target) or ``variables``
(an object of strings, numbers or booleans, for a prompt target), and ``expect``: a
non-empty list of scorer expectations (``appliance.evals.scorers``). Optionally ``id``
(unique in the set; else ``line-N``), ``params`` (``max_tokens``, ``temperature``,
``seed``) and ``metadata`` (any object, kept and shown). Blank lines are skipped. Any
other field is refused, so that a misspelt ``expect`` is not a case that always passes.
Every error names the line and the field.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from appliance.errors import BadInput
from appliance.evals.scorers import check_expectation
from appliance.llm.chat import check_messages

FIELDS = ("id", "messages", "variables", "expect", "params", "metadata")
MAX_CASES = 100_000


@dataclass(frozen=True)
class Case:
    line: int
    id: str
    expect: list[dict[str, Any]]
    messages: list[dict[str, str]] | None = None
    variables: dict[str, Any] | None = None
    params: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"line": self.line, "id": self.id}
        if self.messages is not None:
            out["messages"] = self.messages
        if self.variables is not None:
            out["variables"] = self.variables
        out["expect"] = self.expect
        if self.params:
            out["params"] = self.params
        if self.metadata:
            out["metadata"] = self.metadata
        return out


def check_params(value: Any, where: str = "params") -> dict[str, Any]:
    """Generation parameters of a case or a run: ``max_tokens`` (at least 1),
    ``temperature`` (0 to 2; 0 is greedy), ``seed`` (a whole number)."""
    if not isinstance(value, dict):
        raise BadInput(f"{where} must be an object", param=where)
    out: dict[str, Any] = {}
    for key, v in value.items():
        if key == "max_tokens":
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise BadInput(f"{where}.max_tokens must be a whole number of at least 1",
                               param=f"{where}.max_tokens")
        elif key == "temperature":
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) \
                    or not 0 <= v <= 2:
                raise BadInput(f"{where}.temperature must be a number from 0 to 2",
                               param=f"{where}.temperature")
            v = float(v)
        elif key == "seed":
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 2**63:
                raise BadInput(f"{where}.seed must be a whole number of at least 0",
                               param=f"{where}.seed")
        else:
            raise BadInput(f"{where}: unknown parameter '{key}' (max_tokens, temperature, "
                           "seed)", param=f"{where}.{key}")
        out[key] = v
    return out


def _variables(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict) or not value:
        raise BadInput("'variables' must be a non-empty object", param="variables")
    for key, v in value.items():
        if isinstance(v, dict | list) or v is None:
            raise BadInput(f"variables.{key} must be a string, a number or a boolean",
                           param=f"variables.{key}")
    return dict(value)


def parse_case(obj: Any, line: int) -> Case:
    """One line's object, checked; ``BadInput`` naming the field (without the line)."""
    if not isinstance(obj, dict):
        raise BadInput("must be a JSON object")
    unknown = [k for k in obj if k not in FIELDS]
    if unknown:
        raise BadInput(f"unknown field '{unknown[0]}' (fields: {', '.join(FIELDS)})",
                       param=unknown[0])
    case_id = obj.get("id", f"line-{line}")
    if not isinstance(case_id, str) or not case_id.strip() or len(case_id) > 200:
        raise BadInput("'id' must be a non-empty string of at most 200 characters",
                       param="id")
    has_messages, has_variables = "messages" in obj, "variables" in obj
    if has_messages == has_variables:
        raise BadInput("give 'messages' (for a model) or 'variables' (for a prompt), not "
                       f"{'both' if has_messages else 'neither'}", param="messages")
    messages = check_messages(obj["messages"]) if has_messages else None
    variables = _variables(obj["variables"]) if has_variables else None
    expect = obj.get("expect")
    if not isinstance(expect, list) or not expect:
        raise BadInput("'expect' must be a non-empty list of {scorer, ...arguments}",
                       param="expect")
    checked = []
    for i, item in enumerate(expect):
        try:
            checked.append(check_expectation(item))
        except BadInput as exc:
            where = f"expect[{i}]" + (f".{exc.param}" if exc.param else "")
            raise BadInput(f"{where}: {exc.message}", param=where) from None
    params = check_params(obj.get("params", {}))
    metadata = obj.get("metadata", {})
    if not isinstance(metadata, dict):
        raise BadInput("'metadata' must be an object", param="metadata")
    return Case(line=line, id=case_id, expect=checked, messages=messages,
                variables=variables, params=params, metadata=metadata)


def parse_jsonl(data: bytes, source: str = "the file") -> list[Case]:
    """Every case of a JSONL file; ``BadInput`` naming the first bad line and field."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise BadInput(f"{source}, line {line}: not UTF-8") from None
    cases: list[Case] = []
    seen: dict[str, int] = {}
    for n, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except ValueError as exc:
            raise BadInput(f"{source}, line {n}: not JSON: {exc}") from None
        try:
            case = parse_case(obj, n)
        except BadInput as exc:
            raise BadInput(f"{source}, line {n}: {exc.message}", param=exc.param) from None
        if case.id in seen:
            raise BadInput(f"{source}, line {n}: id {case.id!r} is already the id of line "
                           f"{seen[case.id]}", param="id")
        seen[case.id] = n
        cases.append(case)
        if len(cases) > MAX_CASES:
            raise BadInput(f"{source}: more than {MAX_CASES} cases")
    if not cases:
        raise BadInput(f"{source} holds no cases (one JSON object a line)")
    return cases
