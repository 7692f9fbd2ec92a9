"""The OpenAPI 3 description of ``/api/...``, generated from the registered routes.

Each API view may declare its request body and a one-line response shape with
``@api(body=..., returns=...)``; the path, methods, parameters, summary
(the docstring's first line) and the required permission come from the URL map
and ``@requires``. Since nothing is written by hand, the description can not
drift from the code: ``tests/test_console_security.py`` checks every ``/api`` rule
is in it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, TypeVar

from flask import Flask

from appliance import __version__

F = TypeVar("F", bound=Callable[..., Any])

_CONVERTER = re.compile(r"<(?:(\w+)(?:\([^)]*\))?:)?(\w+)>")
_TYPES = {"int": {"type": "integer"}, "float": {"type": "number"}}


def api(*, body: dict[str, Any] | None = None, returns: str = "object") -> Callable[[F], F]:
    """Describe an API view's JSON body (a JSON Schema object) and what it returns."""

    def mark(view: F) -> F:
        view.api_body = body  # type: ignore[attr-defined]
        view.api_returns = returns  # type: ignore[attr-defined]
        return view

    return mark


def _path_and_params(rule: str) -> tuple[str, list[dict[str, Any]]]:
    params: list[dict[str, Any]] = []

    def sub(match: re.Match[str]) -> str:
        converter, name = match.group(1) or "string", match.group(2)
        params.append({"name": name, "in": "path", "required": True,
                       "schema": _TYPES.get(converter, {"type": "string"})})
        return "{" + name + "}"

    return _CONVERTER.sub(sub, rule), params


def openapi(app: Flask) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        if not rule.rule.startswith("/api/"):
            continue
        view = app.view_functions[rule.endpoint]
        path, params = _path_and_params(rule.rule)
        permission = getattr(view, "permission", None)
        doc = (view.__doc__ or "").strip()
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            op: dict[str, Any] = {
                "operationId": f"{rule.endpoint}.{method.lower()}",
                "summary": doc.splitlines()[0] if doc else rule.endpoint,
                "x-permission": permission,
                "parameters": params,
                "responses": {
                    "200": {"description": getattr(view, "api_returns", "object"),
                            "content": {"application/json": {"schema": {"type": "object"}}}},
                    "default": {"description": "an error",
                                "content": {"application/json": {
                                    "schema": {"$ref": "#/components/schemas/Error"}}}},
                },
            }
            if permission != "public":
                op["security"] = [{"bearer": []}, {"session": []}]
            body = getattr(view, "api_body", None)
            if body is not None and method in ("POST", "PUT", "PATCH"):
                op["requestBody"] = {"required": True,
                                     "content": {"application/json": {"schema": body}}}
            paths.setdefault(path, {})[method.lower()] = op
    return {
        "openapi": "3.0.3",
        "info": {"title": "appliance console API", "version": __version__,
                 "description": "Cookie sessions must send the X-CSRF-Token header on "
                                "POST; API tokens (Authorization: Bearer) need none."},
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "session": {"type": "apiKey", "in": "cookie",
                            "name": "__Host-appliance-session"},
            },
            "schemas": {"Error": {"type": "object", "required": ["error"],
                                  "properties": {"error": {"type": "string"}}}},
        },
    }
