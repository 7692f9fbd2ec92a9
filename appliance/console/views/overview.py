"""Overview: what is serving, training, drifting and what changed, at a glance."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, render_template
from werkzeug.wrappers import Response

from appliance.console import web
from appliance.console.apidoc import api
from appliance.console.security import requires
from appliance.console.views import alerts as alerts_view
from appliance.console.views import audit as audit_view
from appliance.gpu.placement import inventory_source
from appliance.queue import jobs, liveness
from appliance.registry import list_aliases

bp = Blueprint("overview", __name__)
PERMISSION = "models.read"  # every role; what is serving leads the page
SERVICES = ("console", "serving", "worker", "scheduler")
STALE_S = 120.0


def services() -> list[dict[str, Any]]:
    """Each daemon's newest heartbeat; up when it is fresher than STALE_S."""
    db = web.get_db()
    fresh = {(r["service"], r["pid"], r["host"]) for r in liveness.live(db, stale_s=STALE_S)}
    out = []
    for name in SERVICES:
        rows = list(db.query("SELECT * FROM heartbeats WHERE service = ? ORDER BY seen_at DESC",
                             [name]))
        up = [r for r in rows if (r["service"], r["pid"], r["host"]) in fresh]
        out.append({
            "service": name,
            "up": bool(up) or name == "console",
            "processes": len(up),
            "last_heartbeat": rows[0]["seen_at"] if rows else None,
            "host": rows[0]["host"] if rows else None,
        })
    return out


def gpus() -> dict[str, Any]:
    inventory = inventory_source(web.config()["gpu.inventory_file"]).read()
    holders: dict[int, list[int]] = {}
    for job in jobs.list_jobs(web.get_db(), state="running", limit=1000):
        for index in job.gpu_indices:
            holders.setdefault(index, []).append(job.id)
    # The serving daemon's heartbeat names the GPUs its sessions run on.
    services_on: dict[int, list[str]] = {}
    for beat in liveness.live(web.get_db(), stale_s=STALE_S):
        for index in beat["details"].get("gpu_indices", []):
            services_on.setdefault(int(index), []).append(beat["service"])
    out = inventory.as_dict()
    for gpu in out["gpus"]:
        gpu["jobs"] = holders.get(gpu["index"], [])
        gpu["services"] = sorted(set(services_on.get(gpu["index"], [])))
    return out


def summary() -> dict[str, Any]:
    db = web.get_db()
    return {
        "services": services(),
        "gpus": gpus(),
        "queue": jobs.queue_depth(db),
        "serving": [a for a in list_aliases(db)],
        "alerts": alerts_view.open_count(db),
        "audit": audit_view.last_verification(db),
    }


@bp.get("/")
@requires(PERMISSION)
def page() -> str:
    return render_template("overview.html", **summary())


@bp.get("/api/overview")
@requires(PERMISSION)
@api(returns="{services, gpus, queue, serving, alerts, audit}")
def api_overview() -> Response:
    """Services with their last heartbeat, GPUs, queue depth, aliases, alerts, audit state."""
    return jsonify(summary())
