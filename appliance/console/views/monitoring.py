"""Monitoring per model: traffic, latency p50/p99 and errors from monitoring.db's request log.

The charts are SVG drawn here from the per-minute numbers, so they read
without JavaScript. Drift appears when the drift service has recorded results.
"""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, jsonify, render_template
from markupsafe import Markup
from werkzeug.wrappers import Response

from appliance.console import charts, web
from appliance.console.apidoc import api
from appliance.console.security import requires

bp = Blueprint("monitoring", __name__)
READ = "monitoring.read"
MAX_HOURS = 24 * 30


def _percentile(sorted_values: list[int], q: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q * len(sorted_values)))
    return float(sorted_values[rank - 1])


def traffic(model: str, hours: int) -> dict[str, Any]:
    """Per-minute requests, errors and latency percentiles of ``model`` over ``hours``."""
    since = int(time.time() // 60) - hours * 60
    minutes: dict[int, dict[str, Any]] = {}
    for r in web.get_monitoring_db().query(
        "SELECT minute, status, latency_us FROM requests WHERE model = ? AND minute >= ?"
        " ORDER BY minute", [model, since]
    ):
        m = minutes.setdefault(r["minute"], {"count": 0, "errors": 0, "lat": []})
        m["count"] += 1
        m["errors"] += 1 if r["status"] >= 400 else 0
        m["lat"].append(r["latency_us"])
    series = []
    all_lat: list[int] = []
    for minute, m in sorted(minutes.items()):
        lat = sorted(m["lat"])
        all_lat.extend(lat)
        series.append({"minute": minute, "requests": m["count"], "errors": m["errors"],
                       "p50_ms": _percentile(lat, 0.5) / 1000,
                       "p99_ms": _percentile(lat, 0.99) / 1000})
    all_lat.sort()
    total = sum(s["requests"] for s in series)
    errors = sum(s["errors"] for s in series)
    return {
        "model": model, "hours": hours, "minutes": series,
        "totals": {"requests": total, "errors": errors,
                   "error_rate": errors / total if total else 0.0,
                   "p50_ms": _percentile(all_lat, 0.5) / 1000 if all_lat else None,
                   "p99_ms": _percentile(all_lat, 0.99) / 1000 if all_lat else None},
    }


def served_models() -> list[dict[str, Any]]:
    return list(web.get_monitoring_db().query(
        "SELECT model, COUNT(*) AS requests, MAX(ts) AS last_ts FROM requests"
        " GROUP BY model ORDER BY model"))


def _label(minute: int) -> str:
    return datetime.fromtimestamp(minute * 60, UTC).strftime("%m-%d %H:%M")


def traffic_charts(data: dict[str, Any]) -> dict[str, Markup]:
    mins = data["minutes"]
    labels = (_label(mins[0]["minute"]), _label(mins[-1]["minute"])) if mins else ("", "")
    return {
        "traffic": charts.line_chart(
            [("requests/min", [(m["minute"], m["requests"]) for m in mins]),
             ("errors/min", [(m["minute"], m["errors"]) for m in mins])],
            title="requests and errors per minute", x_labels=labels),
        "latency": charts.line_chart(
            [("p50 ms", [(m["minute"], m["p50_ms"]) for m in mins]),
             ("p99 ms", [(m["minute"], m["p99_ms"]) for m in mins])],
            title="latency p50 and p99 per minute (ms)", x_labels=labels),
    }


def drift_rows(model: str) -> list[dict[str, Any]]:
    """Recorded drift results, when the drift service keeps them in appliance.db."""
    db = web.get_db()
    if not db["drift_results"].exists():
        return []
    return list(db.query("SELECT * FROM drift_results WHERE model = ? ORDER BY rowid DESC"
                         " LIMIT 200", [model]))


@bp.get("/monitoring")
@requires(READ)
def index() -> str:
    return render_template("monitoring.html", models=served_models())


@bp.get("/monitoring/<model>")
@requires(READ)
def model_page(model: str) -> str:
    hours = web.int_arg("hours", 24, low=1, high=MAX_HOURS)
    data = traffic(model, hours)
    return render_template("monitoring_model.html", data=data, charts=traffic_charts(data),
                           drift=drift_rows(model))


@bp.get("/api/monitoring/<model>")
@requires(READ)
@api(returns="{model, hours, minutes: [{minute, requests, errors, p50_ms, p99_ms}], totals, drift}")
def api_model(model: str) -> Response:
    """Per-minute traffic, errors and latency p50/p99 of a model (?hours=, default 24)."""
    data = traffic(model, web.int_arg("hours", 24, low=1, high=MAX_HOURS))
    for m in data["minutes"]:
        for key in ("p50_ms", "p99_ms"):
            m[key] = None if math.isnan(m[key]) else m[key]
    data["drift"] = drift_rows(model)
    return jsonify(data)
