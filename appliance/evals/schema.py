"""A documented subset of JSON Schema, for the ``json_schema`` scorer.

Keywords: ``type`` (one name or a list), ``properties``, ``required``, ``enum``,
``items`` (one schema for every element), ``minimum``, ``maximum``, ``minLength``,
``maxLength``; ``$schema``, ``$id``, ``title``, ``description``, ``default`` and
``examples`` are accepted and ignored. Any other keyword is refused when the evaluation
set is added, so that nobody believes a ``pattern`` or a ``$ref`` was checked.
(The ``jsonschema`` package in this environment comes only with Ray and needs a compiled
extension; the appliance does not depend on it.)
"""

from __future__ import annotations

from typing import Any

from appliance.errors import BadInput

TYPES = ("object", "array", "string", "number", "integer", "boolean", "null")
CHECKED = ("type", "properties", "required", "enum", "items", "minimum", "maximum",
           "minLength", "maxLength")
IGNORED = ("$schema", "$id", "title", "description", "default", "examples")


def check_schema(schema: Any, path: str = "schema") -> None:
    """Refuse a schema outside the subset, naming where."""
    if not isinstance(schema, dict):
        raise BadInput(f"{path} must be an object")
    for key in schema:
        if key not in CHECKED and key not in IGNORED:
            raise BadInput(f"{path}: keyword '{key}' is not supported (supported: "
                           f"{', '.join(CHECKED)})")
    if "type" in schema:
        names = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not names or not all(isinstance(n, str) and n in TYPES for n in names):
            raise BadInput(f"{path}.type must be one of {', '.join(TYPES)} (or a list of them)")
    if "properties" in schema:
        if not isinstance(schema["properties"], dict):
            raise BadInput(f"{path}.properties must be an object of schemas")
        for name, sub in schema["properties"].items():
            check_schema(sub, f"{path}.properties.{name}")
    if "required" in schema and not (isinstance(schema["required"], list) and all(
            isinstance(n, str) for n in schema["required"])):
        raise BadInput(f"{path}.required must be a list of property names")
    if "enum" in schema and not (isinstance(schema["enum"], list) and schema["enum"]):
        raise BadInput(f"{path}.enum must be a non-empty list")
    if "items" in schema:
        check_schema(schema["items"], f"{path}.items")
    for key in ("minimum", "maximum"):
        if key in schema and (isinstance(schema[key], bool)
                              or not isinstance(schema[key], int | float)):
            raise BadInput(f"{path}.{key} must be a number")
    for key in ("minLength", "maxLength"):
        if key in schema and (isinstance(schema[key], bool) or not isinstance(schema[key], int)
                              or schema[key] < 0):
            raise BadInput(f"{path}.{key} must be a whole number of at least 0")


def _is(value: Any, name: str) -> bool:
    if name == "object":
        return isinstance(value, dict)
    if name == "array":
        return isinstance(value, list)
    if name == "string":
        return isinstance(value, str)
    if name == "boolean":
        return isinstance(value, bool)
    if name == "null":
        return value is None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return name == "number" or float(value).is_integer()


def _same(a: Any, b: Any) -> bool:
    """JSON equality: 1 and 1.0 are equal, true and 1 are not."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return bool(a == b)


def first_error(value: Any, schema: dict[str, Any], path: str = "$") -> str | None:
    """The first way ``value`` breaks ``schema`` (a checked one), or None."""
    if "type" in schema:
        names = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_is(value, n) for n in names):
            return f"{path} is not of type {' or '.join(names)}"
    if "enum" in schema and not any(_same(value, e) for e in schema["enum"]):
        return f"{path} is not one of the enum's values"
    if isinstance(value, dict):
        for name in schema.get("required", ()):
            if name not in value:
                return f"{path} lacks the required property '{name}'"
        for name, sub in schema.get("properties", {}).items():
            if name in value:
                problem = first_error(value[name], sub, f"{path}.{name}")
                if problem:
                    return problem
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            problem = first_error(item, schema["items"], f"{path}[{i}]")
            if problem:
                return problem
    if _is(value, "number"):
        if "minimum" in schema and value < schema["minimum"]:
            return f"{path} is {value}, under the minimum {schema['minimum']}"
        if "maximum" in schema and value > schema["maximum"]:
            return f"{path} is {value}, over the maximum {schema['maximum']}"
    if isinstance(value, str):
        if "minLength" in schema and len(value) < schema["minLength"]:
            return f"{path} is shorter than {schema['minLength']} characters"
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            return f"{path} is longer than {schema['maxLength']} characters"
    return None
