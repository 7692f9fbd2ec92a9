"""Language models: requests, tokens, latency, device time and cost per model version and
per day (``appliance.monitoring.llm_usage``), with charts per day."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, jsonify, render_template, request
from werkzeug.wrappers import Response

from appliance.console import charts, web
from appliance.console.apidoc import api
from appliance.console.security import requires
from appliance.monitoring import llm_usage

bp = Blueprint("llm", __name__)
READ = "monitoring.read"
PERIODS = ("24h", "7d", "30d")


def _ts(day: str) -> float:
    return datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=UTC).timestamp()


def _day(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")


def usage() -> dict[str, Any]:
    return llm_usage(web.get_monitoring_db(), model=request.args.get("model") or None,
                     since=request.args.get("since") or None, db=web.get_db())


def day_charts(report: dict[str, Any]) -> dict[str, Any]:
    """Requests per day, and tokens per day with the day's cost on a right-hand axis (when
    every request was priced in one currency)."""
    requests: dict[str, list[tuple[float, float]]] = {}
    tokens: dict[str, list[tuple[float, float]]] = {}
    cost: dict[float, float] = {}
    currencies = {c for d in report["days"] for c in d["costs"]}
    for d in report["days"]:
        name, t = f"{d['model']}@{d['version']}", _ts(d["day"])
        requests.setdefault(name, []).append((t, float(d["requests"])))
        tokens.setdefault(name, []).append(
            (t, float(d["prompt_tokens"] + d["completion_tokens"])))
        cost[t] = cost.get(t, 0.0) + sum(d["costs"].values())
    days = sorted(cost)
    span = (_day(days[0]), _day(days[-1])) if days else ("", "")
    right = []
    if len(currencies) == 1:
        label = f"cost {next(iter(currencies))}".strip()
        right = [(label, [(t, cost[t]) for t in days])]
    return {
        "requests": charts.line_chart(sorted(requests.items()), title="requests per day",
                                      x_labels=span, x_format=_day),
        "tokens": charts.line_chart(sorted(tokens.items()), title="tokens per day "
                                    "(prompt and completion)", x_labels=span, x_format=_day,
                                    right=right, right_label=right[0][0] if right else ""),
    }


@bp.get("/llm")
@requires(READ)
def index() -> str:
    report = usage()
    days: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for d in report["days"]:
        days.setdefault((d["model"], d["version"]), []).append(d)
    return render_template("llm.html", report=report, days=days, charts=day_charts(report),
                           periods=PERIODS, since=request.args.get("since", ""),
                           model=request.args.get("model", ""))


@bp.get("/api/llm/usage")
@requires(READ)
@api(returns="{model, since, versions, days, note}")
def api_usage() -> Response:
    """Requests, tokens, p50/p95 time to first token and end-to-end latency, device seconds
    and cost of the language models per model version and per UTC day (?model=, ?since=:
    24h, 7d or an ISO 8601 time)."""
    return jsonify(usage())
