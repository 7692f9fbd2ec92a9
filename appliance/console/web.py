"""What every view shares: the per-request databases, rendering and the one error handler."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from flask import Flask, current_app, g, jsonify, render_template, request
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response

from appliance.config import Config
from appliance.errors import ApplianceError, BadInput
from appliance.storage.db import Database
from appliance.storage.home import Home


def config() -> Config:
    cfg: Config = current_app.config["APPLIANCE_CONFIG"]
    return cfg


def home() -> Home:
    h: Home = current_app.config["APPLIANCE_HOME"]
    return h


def get_db() -> Database:
    """appliance.db for this request: opened on first use, closed at teardown."""
    if "db" not in g:
        g.db = home().db()
    db: Database = g.db
    return db


def get_monitoring_db() -> Database:
    if "monitoring_db" not in g:
        g.monitoring_db = home().monitoring_db()
    db: Database = g.monitoring_db
    return db


def close_dbs(_exc: BaseException | None = None) -> None:
    for name in ("db", "monitoring_db"):
        database = g.pop(name, None)
        if database is not None:
            database.close()


def is_api() -> bool:
    return request.path.startswith("/api/")


def form_field(name: str, *, required: bool = True, default: str = "") -> str:
    """A form (or JSON body) field, stripped; a missing required one is a 400 naming it."""
    if request.is_json:
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            raise BadInput("the request body must be a JSON object")
        value = body.get(name, default)
        value = "" if value is None else str(value)
    else:
        value = request.form.get(name, default)
    value = value.strip()
    if required and not value:
        raise BadInput(f"field '{name}' is required")
    return value


def int_arg(name: str, default: int, *, low: int = 0, high: int = 100_000) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise BadInput(f"query parameter '{name}' must be an integer") from exc
    if not low <= value <= high:
        raise BadInput(f"query parameter '{name}' must be between {low} and {high}")
    return value


def ago(ts: str | None) -> str:
    """'12 s ago' from an ISO time, for people; the exact time stays in a title."""
    if not ts:
        return "never"
    try:
        moment = datetime.fromisoformat(ts.replace("Z", "+00:00"))
    except ValueError:
        return ts
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    seconds = (datetime.now(UTC) - moment).total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit} ago"
    return f"{max(seconds, 0):.0f} s ago"


def num(value: Any, digits: int = 4) -> str:
    """A number as a person reads it: four significant digits (0.9358, 1.235e-07, 12,345);
    from 10,000 up, whole and with separators (12,346, not 1.235e+04)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "-" if value is None else str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if value != value:  # NaN
        return "n/a"
    if value in (float("inf"), float("-inf")):
        return "∞" if value > 0 else "-∞"
    if value == int(value) and abs(value) < 1e15:
        return f"{int(value):,}"
    if 1e4 <= abs(value) < 1e15:
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def json_text(value: Any) -> str:
    """JSON as text for a person (``>=``, not ``\\u003e=``); the template escapes it."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


def metric_rows(metrics: Any) -> list[tuple[str, str, Any]]:
    """(split, metric, value) rows of a metrics mapping, nested (``{"test": {...}}``) or flat,
    for the one metrics table every page shows."""
    rows: list[tuple[str, str, Any]] = []
    if not isinstance(metrics, dict):
        return rows
    for key, value in metrics.items():
        if isinstance(value, dict):
            rows.extend((str(key), str(k), v) for k, v in value.items())
        else:
            rows.append(("", str(key), value))
    return rows


def _error_response(status: int, message: str) -> Response:
    if is_api():
        response = jsonify({"error": message})
        response.status_code = status
        return response
    template = "login.html" if status == 401 else "error.html"
    body = render_template(template, status=status, message=message,
                           next_url=request.full_path.rstrip("?"))
    return Response(body, status=status, mimetype="text/html")


def handle_appliance_error(exc: ApplianceError) -> Response:
    return _error_response(exc.status, exc.message)


def handle_http_error(exc: HTTPException) -> Response:
    return _error_response(exc.code or 500, exc.description or exc.name)


def init_app(app: Flask) -> None:
    app.teardown_appcontext(close_dbs)
    app.register_error_handler(ApplianceError, handle_appliance_error)
    app.register_error_handler(HTTPException, handle_http_error)
    app.jinja_env.filters["ago"] = ago
    app.jinja_env.filters["num"] = num
    app.jinja_env.filters["json_text"] = json_text
    app.jinja_env.filters["metric_rows"] = metric_rows
    app.jinja_env.autoescape = True
