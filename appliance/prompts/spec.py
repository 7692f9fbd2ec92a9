"""A prompt's YAML file: read, checked, put in canonical form, rendered.

A file is checked whole before anything is stored. Every error names the key
path at fault (``messages[1].role``) and, where the YAML gives it, the line, so
a bad file is fixed in one look. The canonical form (fixed key order, defaults
spelled out) is what versions are compared, diffed and content-addressed by:
the same content gives back the same version however it was laid out.

Rendering is plain substitution of ``{{name}}``: a value is inserted as it is,
never read again for placeholders, and nothing in a template is executed.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from appliance.errors import BadInput
from appliance.llm.chat import ROLES
from appliance.registry.refs import parse_ref

MAX_FILE_BYTES = 1024 * 1024
TOP_KEYS = ("description", "model", "messages", "variables", "parameters", "response_schema")
REQUIRED = ("model", "messages")
VARIABLE_KEYS = ("description", "default")
MESSAGE_KEYS = ("role", "content")
#: The generation parameters a prompt may set: the sampling fields of this appliance's
#: ``/v1/chat/completions`` (appliance/serving/http/openai.py), with the same ranges.
PARAMETERS = ("temperature", "top_p", "max_tokens", "min_tokens", "seed", "stop")
JSON_SCHEMA_TYPES = ("object", "array", "string", "number", "integer", "boolean", "null")

_VARIABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_PLACEHOLDER = re.compile(r"\{\{(.*?)\}\}", re.S)


@dataclass(frozen=True)
class Variable:
    name: str
    description: str = ""
    default: str | None = None


@dataclass(frozen=True)
class PromptSpec:
    """One prompt version's content, checked."""

    model: str
    messages: tuple[tuple[str, str], ...]
    variables: tuple[Variable, ...] = ()
    parameters: tuple[tuple[str, Any], ...] = ()
    description: str = ""
    response_schema: Mapping[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        """The canonical form, in the key order of the file format."""
        doc: dict[str, Any] = {
            "description": self.description,
            "model": self.model,
            "messages": [{"role": r, "content": c} for r, c in self.messages],
            "variables": {v.name: {"description": v.description, "default": v.default}
                          for v in self.variables},
            "parameters": dict(self.parameters),
        }
        if self.response_schema is not None:
            doc["response_schema"] = json.loads(json.dumps(self.response_schema))
        return doc

    def canonical_yaml(self) -> str:
        return yaml.safe_dump(self.as_dict(), sort_keys=False, allow_unicode=True,
                              default_flow_style=False, width=100)

    def digest(self) -> str:
        """sha256 of the canonical JSON: what names the content."""
        text = json.dumps(self.as_dict(), sort_keys=True, separators=(",", ":"),
                          ensure_ascii=False, allow_nan=False)
        return hashlib.sha256(text.encode()).hexdigest()

    @property
    def parameter_dict(self) -> dict[str, Any]:
        return dict(self.parameters)

    def render(self, values: Mapping[str, Any]) -> list[dict[str, str]]:
        """The template's messages with ``values`` (checked, strings) substituted; a
        variable not given takes its default."""
        declared = {v.name: v for v in self.variables}
        for name in values:
            if name not in declared:
                known = ", ".join(sorted(declared)) or "none"
                raise BadInput(f"unknown variable '{name}' (this prompt declares: {known})",
                               param=f"variables.{name}")
        full: dict[str, str] = {}
        for name, var in declared.items():
            if name in values:
                full[name] = _text(values[name], name)
            elif var.default is not None:
                full[name] = var.default
            else:
                raise BadInput(f"variable '{name}' is missing and has no default",
                               param=f"variables.{name}")
        return [{"role": role, "content": _PLACEHOLDER.sub(
                    lambda m: full[m.group(1).strip()], content)}
                for role, content in self.messages]


def _text(value: Any, name: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return json.dumps(value)
    raise BadInput(f"variable '{name}' must be a string or a number",
                   param=f"variables.{name}")


# ---- reading a file -----------------------------------------------------------------


class _Lines:
    """The line of each key path in the YAML, and duplicate keys (which YAML would
    silently resolve to the last)."""

    def __init__(self, root: yaml.Node | None) -> None:
        self.lines: dict[str, int] = {}
        self.duplicate: tuple[str, int] | None = None
        if root is not None:
            self._walk(root, "")

    def _walk(self, node: yaml.Node, path: str) -> None:
        self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            seen: set[str] = set()
            for key, value in node.value:
                name = str(key.value)
                child = f"{path}.{name}" if path else name
                if name in seen and self.duplicate is None:
                    self.duplicate = (child, key.start_mark.line + 1)
                seen.add(name)
                self.lines[child] = key.start_mark.line + 1
                self._walk(value, child)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self._walk(item, f"{path}[{i}]")

    def line(self, path: str) -> int | None:
        while path:
            if path in self.lines:
                return self.lines[path]
            path = re.sub(r"(\[\d+\]|\.[^.\[]+|^[^.\[]+)$", "", path)
        return None


class _Checker:
    def __init__(self, source: str, lines: _Lines) -> None:
        self.source = source
        self.lines = lines

    def fail(self, path: str, message: str) -> BadInput:
        line = self.lines.line(path) if path else None
        where = f"{path} (line {line})" if line else path or "the file"
        return BadInput(f"{self.source}: {where}: {message}", param=path or None)

    def mapping(self, value: Any, path: str, keys: tuple[str, ...]) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(path, f"must be a mapping of {', '.join(keys)}")
        for key in value:
            if key not in keys:
                child = f"{path}.{key}" if path else str(key)
                raise self.fail(child, f"unknown key '{key}' (expected one of "
                                       f"{', '.join(keys)})")
        return value

    def string(self, value: Any, path: str, *, empty: bool = True) -> str:
        if not isinstance(value, str):
            raise self.fail(path, "must be a string")
        if not empty and not value.strip():
            raise self.fail(path, "must not be empty")
        return value


def parse_prompt(data: bytes, source: str = "prompt") -> PromptSpec:
    """Check a prompt file's bytes; raise ``BadInput`` naming the key (and line) at fault."""
    if len(data) > MAX_FILE_BYTES:
        raise BadInput(f"{source}: {len(data)} bytes is over the limit of {MAX_FILE_BYTES}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadInput(f"{source}: not UTF-8 text (byte {exc.start})") from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise BadInput(f"{source}: not valid YAML{where}: {problem}") from None
    lines = _Lines(root)
    check = _Checker(source, lines)
    if lines.duplicate is not None:
        raise check.fail(lines.duplicate[0], "appears twice")
    if doc is None:
        raise BadInput(f"{source}: the file is empty; it needs at least 'model' and 'messages'")
    doc = check.mapping(doc, "", TOP_KEYS)
    for key in REQUIRED:
        if key not in doc:
            raise check.fail("", f"missing key '{key}'")

    description = "" if doc.get("description") is None else check.string(
        doc["description"], "description")
    model = check.string(doc["model"], "model", empty=False)
    try:
        parse_ref(model, "model")
    except BadInput as exc:
        raise check.fail("model", f"{exc.message} (expected NAME, NAME@ALIAS or "
                                  "NAME@VERSION)") from None

    messages = _messages(check, doc["messages"])
    used = _placeholders(check, messages)
    variables = _variables(check, doc.get("variables"))
    declared = {v.name for v in variables}
    for name, path in used.items():
        if name not in declared:
            raise check.fail(path, f"uses the variable '{name}', which 'variables' does not "
                                   "declare")
    for var in variables:
        if var.name not in used:
            raise check.fail(f"variables.{var.name}", "declared but used in no message")
    parameters = _parameters(check, doc.get("parameters"))
    schema = doc.get("response_schema")
    if schema is not None:
        schema = _schema(check, schema)
    return PromptSpec(model=model, messages=messages, variables=variables,
                      parameters=parameters, description=description, response_schema=schema)


def _messages(check: _Checker, value: Any) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, list) or not value:
        raise check.fail("messages", "must be a non-empty list of {role, content}")
    out = []
    for i, message in enumerate(value):
        path = f"messages[{i}]"
        message = check.mapping(message, path, MESSAGE_KEYS)
        for key in MESSAGE_KEYS:
            if key not in message:
                raise check.fail(path, f"missing key '{key}'")
        role = message["role"]
        if role not in ROLES:
            raise check.fail(f"{path}.role", f"must be one of {', '.join(ROLES)}, not "
                                             f"{role!r}")
        out.append((role, check.string(message["content"], f"{path}.content", empty=False)))
    return tuple(out)


def _placeholders(check: _Checker, messages: tuple[tuple[str, str], ...]) -> dict[str, str]:
    """Each variable used, with the path of its first use."""
    used: dict[str, str] = {}
    for i, (_role, content) in enumerate(messages):
        path = f"messages[{i}].content"
        for match in _PLACEHOLDER.finditer(content):
            name = match.group(1).strip()
            if not _VARIABLE.match(name):
                raise check.fail(path, f"'{match.group(0)}' is not a placeholder: write "
                                       "{{name}}, a name of letters, digits and '_'")
            used.setdefault(name, path)
        if "{{" in _PLACEHOLDER.sub("", content):
            raise check.fail(path, "'{{' opens a placeholder that is never closed with '}}'")
    return used


def _variables(check: _Checker, value: Any) -> tuple[Variable, ...]:
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise check.fail("variables", "must be a mapping of variable names to "
                                      "{description, default} (or nothing)")
    out = []
    for name, spec in value.items():
        path = f"variables.{name}"
        if not isinstance(name, str) or not _VARIABLE.match(name):
            raise check.fail(path, "a variable's name is letters, digits and '_', not "
                                   "starting with a digit")
        if spec is None:
            out.append(Variable(name))
            continue
        spec = check.mapping(spec, path, VARIABLE_KEYS)
        description = "" if spec.get("description") is None else check.string(
            spec["description"], f"{path}.description")
        default = spec.get("default")
        if default is not None:
            if isinstance(default, bool) or not isinstance(default, (str, int, float)):
                raise check.fail(f"{path}.default", "must be a string or a number")
            default = _text(default, name)
        out.append(Variable(name, description, default))
    return tuple(sorted(out, key=lambda v: v.name))


def _number(check: _Checker, value: Any, path: str) -> float | int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise check.fail(path, "must be a number")
    return value


def _integer(check: _Checker, value: Any, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise check.fail(path, "must be an integer")
    return value


def _parameters(check: _Checker, value: Any) -> tuple[tuple[str, Any], ...]:
    if value is None:
        return ()
    params = check.mapping(value, "parameters", PARAMETERS)
    out: dict[str, Any] = {}
    for key, item in params.items():
        path = f"parameters.{key}"
        if item is None:
            continue
        if key == "temperature":
            if not 0 <= _number(check, item, path) <= 2:
                raise check.fail(path, f"must be >= 0 and <= 2, not {item}")
            item = float(item)  # 0 and 0.0 are one content
        elif key == "top_p":
            if not 0 < _number(check, item, path) <= 1:
                raise check.fail(path, f"must be > 0 and <= 1, not {item}")
            item = float(item)
        elif key == "max_tokens":
            if _integer(check, item, path) < 1:
                raise check.fail(path, f"must be at least 1, not {item}")
        elif key == "min_tokens":
            if _integer(check, item, path) < 0:
                raise check.fail(path, f"must be 0 or more, not {item}")
        elif key == "seed":
            _integer(check, item, path)
        elif key == "stop":
            if isinstance(item, str) and item:
                item = [item]
            if not (isinstance(item, list) and 1 <= len(item) <= 4
                    and all(isinstance(s, str) and s for s in item)):
                raise check.fail(path, "must be a string or a list of up to 4 non-empty "
                                       "strings")
        out[key] = item
    if "min_tokens" in out and "max_tokens" in out and out["min_tokens"] > out["max_tokens"]:
        raise check.fail("parameters.min_tokens", f"{out['min_tokens']} is more than "
                                                  f"max_tokens {out['max_tokens']}")
    return tuple(sorted(out.items()))


def _schema(check: _Checker, value: Any) -> dict[str, Any]:
    """A JSON schema for the answer: an object whose ``type`` (where given) is a JSON
    schema type. Kept with the version; the evaluation of answers against it comes later."""
    if not isinstance(value, dict):
        raise check.fail("response_schema", "must be a JSON schema (a mapping)")
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise check.fail("response_schema", f"is not JSON: {exc}") from None
    kind = value.get("type")
    kinds = kind if isinstance(kind, list) else [kind] if kind is not None else []
    for k in kinds:
        if k not in JSON_SCHEMA_TYPES:
            raise check.fail("response_schema.type", f"{k!r} is not a JSON schema type "
                                                     f"({', '.join(JSON_SCHEMA_TYPES)})")
    return value
