"""Alerts raised by monitoring checks (``appliance.monitoring``), newest first, and their
acknowledgement.

Acknowledging needs ``models.write``: it changes the state of a served model's
alert (recorded in the audit log), an operator's act on the model, which
readers (viewers, approvers) may see but not do.
"""

from __future__ import annotations

from flask import Blueprint, jsonify, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from appliance import monitoring
from appliance.console import security, web
from appliance.console.apidoc import api
from appliance.console.security import requires
from appliance.storage.db import Database

bp = Blueprint("alerts", __name__)
READ = "monitoring.read"
ACK = "models.write"


def open_count(db: Database) -> int:
    """Open alerts: raised and not yet acknowledged or resolved."""
    return sum(1 for a in monitoring.list_alerts(db) if a.state == "open")


def _include_closed() -> bool:
    return request.args.get("all", "") in ("1", "true", "yes")


@bp.get("/alerts")
@requires(READ)
def index() -> str:
    alerts = monitoring.list_alerts(web.get_db(), include_closed=_include_closed())
    return render_template("alerts.html", alerts=alerts, show_all=_include_closed())


@bp.post("/alerts/<int:alert_id>/ack")
@requires(ACK)
def ack_form(alert_id: int) -> Response:
    monitoring.acknowledge(web.get_db(), alert_id, actor=security.actor())
    return redirect(url_for("alerts.index"), 303)


@bp.get("/api/alerts")
@requires(READ)
@api(returns="{alerts: [{id, model, version, kind, state, severity, message, ...}], open}")
def api_alerts() -> Response:
    """Live alerts (open and acknowledged) newest first, every alert with ?all=1."""
    db = web.get_db()
    return jsonify({"alerts": [a.as_dict() for a in
                               monitoring.list_alerts(db, include_closed=_include_closed())],
                    "open": open_count(db)})


@bp.post("/api/alerts/<int:alert_id>/ack")
@requires(ACK)
@api(returns="the acknowledged alert")
def api_ack(alert_id: int) -> Response:
    """Acknowledge an open alert; it stays live until its condition clears."""
    return jsonify(monitoring.acknowledge(web.get_db(), alert_id,
                                          actor=security.actor()).as_dict())
