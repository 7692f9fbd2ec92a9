"""Alerts raised by monitoring and drift checks, newest first."""

from __future__ import annotations

from typing import Any

import sqlite_utils
from flask import Blueprint, jsonify, render_template
from werkzeug.wrappers import Response

from appliance.console import web
from appliance.console.apidoc import api
from appliance.console.security import requires

bp = Blueprint("alerts", __name__)
READ = "monitoring.read"


def recent(db: sqlite_utils.Database, limit: int = 200) -> list[dict[str, Any]]:
    """The alerts table belongs to the monitoring service; absent until it is installed."""
    if not db["alerts"].exists():
        return []
    return list(db.query("SELECT * FROM alerts ORDER BY rowid DESC LIMIT ?", [limit]))


def open_count(db: sqlite_utils.Database) -> int | None:
    """Open alerts, or None where no alert has a place to be recorded yet."""
    if not db["alerts"].exists():
        return None
    columns = db["alerts"].columns_dict
    if "state" in columns:
        row = db.execute("SELECT COUNT(*) FROM alerts WHERE state = 'open'").fetchone()
    elif "resolved_at" in columns:
        row = db.execute("SELECT COUNT(*) FROM alerts WHERE resolved_at IS NULL").fetchone()
    else:
        row = db.execute("SELECT COUNT(*) FROM alerts").fetchone()
    return int(row[0])


@bp.get("/alerts")
@requires(READ)
def index() -> str:
    db = web.get_db()
    return render_template("alerts.html", alerts=recent(db), enabled=db["alerts"].exists())


@bp.get("/api/alerts")
@requires(READ)
@api(returns="{alerts: [...], open}")
def api_alerts() -> Response:
    """Recent alerts, newest first, and how many are open."""
    db = web.get_db()
    return jsonify({"alerts": recent(db), "open": open_count(db)})
