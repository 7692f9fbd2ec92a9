"""Monitoring per model: traffic, latency, errors, drift over time, reference against current
distributions and labelled performance, from ``appliance.monitoring``.

The numbers come from the monitoring service (``overview``, ``check_history``,
``traffic``, ``samples``); the charts are SVG drawn here, so the page reads
without JavaScript. *Run a check now* needs ``train``: besides recording a
check and raising alerts, a check may submit a retraining job under the model's
retraining policy, which is what ``train`` grants.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime
from typing import Any

import numpy as np
from flask import Blueprint, jsonify, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from appliance import monitoring, registry
from appliance.console import charts, security, web
from appliance.console.apidoc import api
from appliance.console.security import requires
from appliance.errors import BadInput
from appliance.jobs.drift import check_model
from appliance.monitoring.quality import feature_kinds
from appliance.monitoring.traffic import Window, as_float, samples

bp = Blueprint("monitoring", __name__)
READ = "monitoring.read"
CHECK = "train"  # a check may start retraining (see the module's docstring)
FEEDBACK = "feedback.write"
MAX_HOURS = 24 * 30
DISPLAY_BINS = 20
PAGE_SAMPLES = 2000  # newest kept requests drawn against the profile without a stored check
COUNTS = ("count", "rows", "labelled_rows")  # drawn on their own axis, apart from the rates
FEEDBACK_BODY = {"type": "object", "required": ["records"], "properties": {
    "records": {"type": "array", "items": {"type": "object", "required": ["request_id", "label"],
                "properties": {"request_id": {"type": "string"}, "label": {"type": "string"},
                               "row": {"type": "integer"}}}},
    "strict": {"type": "boolean"}}}


def _ts(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _label(ts: float) -> str:
    return datetime.fromtimestamp(ts).strftime("%m-%d %H:%M")


def served_models() -> list[dict[str, Any]]:
    return monitoring.served_models(web.get_monitoring_db())


def check_reports(model: str, limit: int = 200) -> list[dict[str, Any]]:
    """The stored checks' full reports, oldest first: the latest one's per-feature
    histograms and every one's labelled performance."""
    rows = web.get_monitoring_db().query(
        "SELECT * FROM (SELECT id, version, checked_at, report FROM checks WHERE model = ?"
        " ORDER BY checked_at DESC LIMIT ?) ORDER BY checked_at", [model, limit])
    return [{"id": r["id"], "version": r["version"], "checked_at": r["checked_at"],
             "report": json.loads(r["report"])} for r in rows]


# --- reference against current ----------------------------------------------------------


def _from_check(check: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for col in (check["report"].get("data_drift") or {}).get("columns", []):
        plot = col.get("plot") or {}
        if "edges" in plot:
            labels = [charts.fmt(e) for e in plot["edges"][:-1]]
        elif "labels" in plot:
            labels = [str(x) for x in plot["labels"]]
        else:
            continue
        out.append({"feature": col["name"], "role": col.get("role", "feature"),
                    "drifted": col.get("drifted"), "source": f"check {check['id']}",
                    "labels": labels, "reference": plot.get("reference", []),
                    "current": plot.get("current", [])})
    return out


def _from_samples(mv: registry.ModelVersion, window: Window) -> list[dict[str, Any]]:
    """Without a stored check: the profile's histogram against the window's kept inputs, each
    row counted as its weight (what it stands for)."""
    if not mv.profile_digest:
        return []
    profile = json.loads(web.home().blobs.read_bytes(mv.profile_digest))
    s = samples(web.get_monitoring_db(), mv.name, window, version=mv.version,
                limit=PAGE_SAMPLES)
    out = []
    for name, kind in feature_kinds(mv.signature).items():
        column = profile.get("columns", {}).get(name)
        if column is None:
            continue
        values = s.inputs.get(name, [])
        if kind == "categorical" or column.get("type") == "categorical":
            cats = dict(column.get("categories") or {})
            seen: Counter[str] = Counter()
            for v, w in zip(values, s.weights.tolist(), strict=False):
                if v is not None:
                    seen[str(v)] += w  # type: ignore[assignment]
            labels = list(cats) + sorted(set(seen) - set(cats))
            reference = [float(cats.get(c, 0)) for c in labels]
            current = [float(seen.get(c, 0)) for c in labels]
        else:
            bins = column.get("bins")
            if not bins:
                continue
            labels, reference = charts.rebin(bins["edges"], bins["counts"], DISPLAY_BINS)
            numbers, _ = as_float(values)
            present = ~np.isnan(numbers)
            numbers, weights = numbers[present], s.weights[:len(present)][present]
            lo, hi = float(bins["edges"][0]), float(bins["edges"][-1])
            if hi <= lo:
                current = [float(weights.sum())]
            else:
                counts, _ = np.histogram(np.clip(numbers, lo, hi), bins=DISPLAY_BINS,
                                         range=(lo, hi), weights=weights)
                current = [float(c) for c in counts]
        out.append({"feature": name, "role": "feature", "drifted": None,
                    "source": f"{s.rows} kept rows", "labels": labels,
                    "reference": reference, "current": current})
    return out


def distributions(mv: registry.ModelVersion, reports: list[dict[str, Any]],
                  window: Window) -> list[dict[str, Any]]:
    """Per feature: from the latest stored check when it kept histograms, else computed."""
    for check in reversed(reports):
        found = _from_check(check)
        if found:
            return found
    return _from_samples(mv, window)


# --- the whole page's data ----------------------------------------------------------------


def performance_series(reports: list[dict[str, Any]]) -> dict[str, list[tuple[float, float]]]:
    """Labelled metrics per stored check, by metric name: performance over time."""
    series: dict[str, list[tuple[float, float]]] = {}
    for check in reports:
        perf = check["report"].get("performance")
        if not perf:
            continue
        for name, value in (perf.get("metrics") or {}).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                series.setdefault(name, []).append((float(check["checked_at"]), float(value)))
    return series


def model_monitoring(name: str, hours: int) -> dict[str, Any]:
    window = Window.last(hours * 60)
    data = monitoring.overview(web.home(), name, window=window)
    mv = registry.resolve(web.get_db(), data["model"])
    reports = check_reports(mv.name)
    data["hours"] = hours
    data["totals"] = monitoring.traffic(web.get_monitoring_db(), mv.name, window,
                                        by_minute=False)
    data["distributions"] = distributions(mv, reports, window)
    data["performance_over_time"] = {
        k: [{"checked_at": t, "value": v} for t, v in pts]
        for k, pts in performance_series(reports).items()}
    return data


def page_charts(data: dict[str, Any]) -> dict[str, Any]:
    live = [r for r in data["traffic"] if r["route"] == "live"]
    per_minute: dict[float, dict[str, float]] = {}
    latency: dict[str, list[tuple[float, float]]] = {}
    for r in live:
        t = _ts(r["minute"])
        m = per_minute.setdefault(t, {"requests": 0.0, "errors": 0.0})
        m["requests"] += r["requests"]
        m["errors"] += r["client_errors"] + r["failures"]
        for q in ("p50", "p99"):
            if r[f"{q}_ms"] is not None:
                latency.setdefault(f"v{r['version']} {q}", []).append((t, r[f"{q}_ms"]))
    times = sorted(per_minute)
    span = (_label(times[0]), _label(times[-1])) if times else ("", "")
    checks = data["checks"]
    effects: dict[str, list[tuple[float, float]]] = {}
    for c in checks:
        t = _ts(c["checked_at"])
        for feature, f in c["features"].items():
            if f.get("effect_value") is not None:
                effects.setdefault(feature, []).append((t, float(f["effect_value"])))
    check_span = ((_label(_ts(checks[0]["checked_at"])), _label(_ts(checks[-1]["checked_at"])))
                  if checks else ("", ""))
    perf = [(k, [(p["checked_at"], p["value"]) for p in pts])
            for k, pts in data["performance_over_time"].items()]
    perf_times = sorted(t for _, pts in perf for t, _ in pts)
    return {
        "traffic": charts.line_chart(
            [("requests/min", [(t, per_minute[t]["requests"]) for t in times]),
             ("errors/min", [(t, per_minute[t]["errors"]) for t in times])],
            title="requests and errors per minute", x_labels=span, x_format=_label),
        "latency": charts.line_chart(sorted(latency.items()),
                                     title="latency p50 and p99 per minute (ms)", x_labels=span,
                                     x_format=_label),
        "drift": charts.line_chart(sorted(effects.items()), title="drift effect size per feature",
                                   x_labels=check_span, x_format=_label),
        "performance": charts.line_chart(
            [p for p in perf if p[0] not in COUNTS], title="labelled performance per check",
            right=[p for p in perf if p[0] in COUNTS], right_label="labelled rows",
            x_labels=(_label(perf_times[0]), _label(perf_times[-1])) if perf_times else ("", ""),
            x_format=_label),
        "distributions": [
            {**d, "chart": charts.histogram(d["labels"], d["reference"], compare=d["current"],
                                            title=f"{d['feature']}: reference against current",
                                            width=320, height=100)}
            for d in data["distributions"]],
    }


def _hours() -> int:
    return web.int_arg("hours", 24, low=1, high=MAX_HOURS)


def _run_check(name: str) -> monitoring.ModelCheck:
    return check_model(web.home(), name, config=web.config(), actor=security.actor())


# --- pages ------------------------------------------------------------------------------


@bp.get("/monitoring")
@requires(READ)
def index() -> str:
    return render_template("monitoring.html", models=served_models())


@bp.get("/monitoring/<model>")
@requires(READ)
def model_page(model: str) -> str:
    data = model_monitoring(model, _hours())
    drawn: dict[str, Any] = page_charts(data)
    return render_template("monitoring_model.html", data=data, charts=drawn)


@bp.post("/monitoring/<model>/check")
@requires(CHECK)
def check_form(model: str) -> Response:
    _run_check(model)
    return redirect(url_for("monitoring.model_page", model=model), 303)


# --- API --------------------------------------------------------------------------------


@bp.get("/api/models/<name>/monitoring")
@requires(READ)
@api(returns="{model, version, window, traffic, totals, checks, alerts, performance, "
             "performance_over_time, distributions}")
def api_model(name: str) -> Response:
    """Traffic per minute, stored checks with per-feature drift, alerts, labelled performance
    and reference-against-current distributions of a model (?hours=, default 24)."""
    return jsonify(model_monitoring(name, _hours()))


@bp.post("/api/models/<name>/monitoring/check")
@requires(CHECK)
@api(returns="the check {model, version, data_drift, quality, performance, breaches, ...}")
def api_check(name: str) -> Response:
    """Run and record a monitoring check of the model now."""
    return jsonify(_run_check(name).as_dict())


@bp.post("/api/models/<name>/feedback")
@requires(FEEDBACK)
@api(body=FEEDBACK_BODY, returns="{model, lines, stored, replaced, unknown, unsampled, ...}")
def api_feedback(name: str) -> Response:
    """Record delayed labels of served predictions: {records: [{request_id, label, row?}]}."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise BadInput("the request body must be a JSON object {records: [...]}")
    strict = body.get("strict", False)
    if not isinstance(strict, bool):
        raise BadInput("field 'strict' must be true or false")
    result = monitoring.add_feedback_records(web.home(), name, body.get("records"),
                                             actor=security.actor(), strict=strict)
    return jsonify(result.as_dict())

