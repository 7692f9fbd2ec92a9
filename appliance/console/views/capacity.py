"""Capacity: the stored capacity profiles of model versions, and the report that sets the
demand in the request log against what the box serves (``appliance.capacity``).

The report needs ``monitoring.read`` (it reads the request log, as the monitoring and
language-model pages do); a profile, measured from a model version and stored with it,
needs ``models.read``, as the version's page does. The report replays the busiest
traffic through a simulation, which can take a few seconds on a large log.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, render_template, request
from werkzeug.wrappers import Response

from appliance.capacity import render, report, store
from appliance.console import charts, web
from appliance.console.apidoc import api
from appliance.console.security import can, requires
from appliance.errors import BadInput
from appliance.monitoring.llm_usage import since_ts

bp = Blueprint("capacity", __name__)
READ = "monitoring.read"
PROFILES = "models.read"
DEFAULT_SINCE = "24h"
PERIODS = ("1h", "24h", "7d")


def _since() -> tuple[str, float]:
    raw = request.args.get("since") or DEFAULT_SINCE
    try:
        return raw, since_ts(raw)
    except BadInput as exc:  # since_ts words its message for the CLI's --since
        raise BadInput(exc.message.replace("--since", "since", 1)) from exc


def _slo() -> float | None:
    raw = request.args.get("slo_p95_ms") or ""
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError as exc:
        raise BadInput(f"slo_p95_ms {raw!r} is not a number of milliseconds") from exc
    if not value > 0 or value != value or value == float("inf"):
        raise BadInput(f"slo_p95_ms must be a number of milliseconds more than 0, not {raw!r}")
    return value


def capacity_report() -> dict[str, Any]:
    """The report for ``?since=`` (default 24h), ``?slo_p95_ms=`` and ``?model=``."""
    _, start = _since()
    return report.build(web.get_monitoring_db(), web.get_db(), web.config(), since=start,
                        slo_p95_ms=_slo(), model=request.args.get("model") or None)


def throughput_chart(profile: dict[str, Any]) -> Any:
    """Throughput against p95 latency: one line per batch size (tabular) or per prompt and
    answer length (language model), its points in order of concurrency (streams)."""
    lines: dict[Any, list[tuple[int, charts.XYPoint]]] = {}
    llm = profile["kind"] == "llm"
    for p in profile["points"]:
        if llm:
            key: Any = (p["prompt_tokens"], p["answer_tokens"])
            point = charts.XYPoint(float(p["tokens_per_s"]), float(p["ttft_ms"]["p95"]),
                                   f"{p['streams']} streams", not p["stable"])
            order = p["streams"]
        else:
            key = p["batch_size"]
            point = charts.XYPoint(float(p["rows_per_s"]), p["latency_us"]["p95"] / 1e3,
                                   f"concurrency {p['concurrency']}", not p["stable"])
            order = p["concurrency"]
        lines.setdefault(key, []).append((order, point))
    series = []
    for key in sorted(lines):
        name = (f"prompt {key[0]}, answer {key[1]} tokens" if llm
                else f"batch {key}")
        series.append((name, [pt for _, pt in sorted(lines[key], key=lambda op: op[0])]))
    if llm:
        return charts.xy_chart(series, title="tokens per second against time to first token "
                               "p95", x_label="throughput", x_unit="tokens/s",
                               y_label="time to first token p95", y_unit="ms",
                               marked_label="not stable")
    return charts.xy_chart(series, title="rows per second against latency p95",
                           x_label="throughput", x_unit="rows/s", y_label="latency p95",
                           y_unit="ms", marked_label="not stable")


def size(value: float | None) -> str:
    """Bytes for a person: 293 KiB, 111 MiB, 2.41 GiB."""
    if value is None:
        return "-"
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if value >= scale:
            amount = value / scale
            return f"{amount:,.3g} {unit}" if amount < 100 else f"{amount:,.0f} {unit}"
    return f"{value:,.0f} bytes"


@bp.get("/capacity")
@requires(READ)
def index() -> tuple[str, int]:
    since = request.args.get("since") or DEFAULT_SINCE
    error, data = "", None
    try:
        data = capacity_report()
    except BadInput as exc:
        error = exc.message
    profiles = store.listing(web.get_db()) if can(PROFILES) else None
    page = render_template("capacity.html", report=data, error=error, profiles=profiles,
                           since=since, periods=PERIODS, model=request.args.get("model", ""),
                           slo=request.args.get("slo_p95_ms", ""), size=size)
    return page, 400 if error else 200


@bp.get("/capacity/profiles/<int:profile_id>")
@requires(PROFILES)
def profile_page(profile_id: int) -> str:
    profile = store.get(web.get_db(), profile_id)
    headers, rows = render.profile_rows(profile)
    return render_template("capacity_profile.html", profile=profile, headers=headers,
                           rows=rows, chart=throughput_chart(profile), size=size)


@bp.get("/api/capacity/profiles")
@requires(PROFILES)
@api(returns="{profiles: [{id, model, version, kind, device, points, created_at, ...}]}")
def api_profiles() -> Response:
    """Capacity profiles, newest first (?model=NAME for one model's)."""
    return jsonify({"profiles": store.listing(web.get_db(),
                                              request.args.get("model") or None)})


@bp.get("/api/capacity/profiles/<int:profile_id>")
@requires(PROFILES)
@api(returns="{id, model, version, kind, device, provider, points, skipped, ...}")
def api_profile(profile_id: int) -> Response:
    """One capacity profile with every measured point, as ``appliance capacity show --json``."""
    return jsonify(store.get(web.get_db(), profile_id))


@bp.get("/api/capacity/report")
@requires(READ)
@api(returns="{since, until, slo_p95_ms, models: [{model, demand, service_time, replay, "
             "recommendation, capacity, memory, enough, missing, ...}]}")
def api_report() -> Response:
    """The capacity report, as ``appliance capacity report --json`` (?since=: 24h by
    default, a duration or an ISO 8601 time; ?slo_p95_ms=; ?model=)."""
    return jsonify(capacity_report())
