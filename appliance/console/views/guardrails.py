"""Guardrails: the verdicts on language-model requests over time, per check and action,
per model version and prompt version, the last triggered ones, and the policy and
classifier in force (``appliance.monitoring.guardrail_verdicts``)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, jsonify, render_template, request
from werkzeug.wrappers import Response

from appliance.console import charts, web
from appliance.console.apidoc import api
from appliance.console.security import requires
from appliance.errors import BadInput
from appliance.monitoring import guardrail_verdicts
from appliance.monitoring.llm_usage import since_ts

bp = Blueprint("guardrails", __name__)
READ = "monitoring.read"
DEFAULT_SINCE = "24h"
PERIODS = ("24h", "7d", "30d")


def _since() -> float:
    raw = request.args.get("since") or DEFAULT_SINCE
    try:
        return since_ts(raw)
    except BadInput as exc:  # since_ts words its message for the CLI's --since
        raise BadInput(exc.message.replace("--since", "since", 1)) from exc


def report() -> dict[str, Any]:
    """The verdicts since ``?since=`` (default 24h), and the policy and classifier in force."""
    data = guardrail_verdicts.summary(web.get_monitoring_db(), _since(), time.time())
    cfg = web.config()
    data["in_force"] = guardrail_verdicts.in_force(
        web.get_db(), str(cfg["guardrails.policies"] or ""), str(cfg["guardrails.classifier"]))
    data["enabled"] = bool(cfg["guardrails.enabled"])
    return data


def verdict_chart(data: dict[str, Any]) -> Any:
    """Requests checked, blocked, redacted and flagged per hour (or day), time on x."""
    unit = data["bucket"]
    fmt = "%Y-%m-%d %H:00" if unit == "hour" else "%Y-%m-%d"

    def label(ts: float) -> str:
        return datetime.fromtimestamp(ts, UTC).strftime(fmt)

    step = 3600.0 if unit == "hour" else 86400.0
    seen = {b["ts"]: b for b in data["buckets"]}
    times = []
    if seen:  # every bucket from the first to the last, quiet ones at 0
        t, last = min(seen), max(seen)
        while t <= last:
            times.append(t)
            t += step
    series = [(name, [(t, float(seen[t][name]) if t in seen else 0.0) for t in times])
              for name in ("checked", "blocked", "redacted", "flagged")]
    span = (label(times[0]), label(times[-1])) if times else ("", "")
    return charts.line_chart(series, title=f"verdicts per {unit} (UTC)", x_labels=span,
                             x_format=label)


@bp.get("/guardrails")
@requires(READ)
def index() -> tuple[str, int]:
    since = request.args.get("since") or DEFAULT_SINCE
    error, data, chart = "", None, None
    try:
        data = report()
        chart = verdict_chart(data)
    except BadInput as exc:
        error = exc.message
    page = render_template("guardrails.html", report=data, chart=chart, error=error,
                           since=since, periods=PERIODS)
    return page, 400 if error else 200


@bp.get("/api/guardrails")
@requires(READ)
@api(returns="{since, until, bucket, totals, buckets, checks, models, prompts, recent, note, "
             "in_force: {policies, classifier_setting, classifier, classifier_note}, enabled}")
def api_guardrails() -> Response:
    """The guardrails' verdicts on language-model requests (?since=: 24h by default, a
    duration or an ISO 8601 time): totals and per hour (per day over 3 days) of requests
    checked, blocked, redacted and flagged; counts per stage, check and action; per model
    version and prompt version; the last 50 triggered verdicts; the policy file and the
    classifier in force."""
    return jsonify(report())
