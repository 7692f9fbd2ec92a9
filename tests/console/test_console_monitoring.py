"""Monitoring in the console: charts drawn from a synthetic request log, a check run from
the page, alerts and their acknowledgement, and the feedback API."""

from __future__ import annotations

import json
import re
import time
import xml.etree.ElementTree as ET

import numpy as np
from flask import Flask
from flask.testing import FlaskClient
from helpers.console import csrf_of

from appliance.serving.requestlog import COLUMNS
from appliance.storage.db import immediate
from appliance.storage.home import Home

SVG = "{http://www.w3.org/2000/svg}"
REQUESTS = 120


def log_requests(home: Home, *, failures: int = 12, shift: float = 30.0) -> list[str]:
    """REQUESTS answered requests of churn@1 over the last ten minutes, as the serving daemon
    logs them: every one sampled, ``failures`` of them 500s, ages shifted by ``shift``
    so the current distribution differs from the reference profile (ages 20..69)."""
    rng = np.random.default_rng(5)
    now = time.time()
    ids = []
    rows = []
    for i in range(REQUESTS):
        ts = now - 600 + i * 5
        age = float(rng.integers(20, 70) + shift)
        failed = i < failures
        request_id = f"req-{i}"
        ids.append(request_id)
        rows.append({"ts": ts, "minute": int(ts // 60), "model": "churn", "version": 1,
                     "route": "primary", "request_id": request_id,
                     "status": 500 if failed else 200, "latency_us": 1000 + 50 * (i % 20),
                     "queue_us": 10, "batch_size": 1, "rows": 1,
                     "error": "boom" if failed else None,
                     "inputs": json.dumps({"age": [[age]]}),
                     "outputs": None if failed else json.dumps({"prediction": [[age]]})})
    mon = home.monitoring_db()
    try:
        with immediate(mon):
            for r in rows:
                mon.execute(f"INSERT INTO requests ({', '.join(COLUMNS)}) VALUES "
                            f"({', '.join('?' for _ in COLUMNS)})", [r[c] for c in COLUMNS])
    finally:
        mon.close()
    return ids


def svgs(html: str, container: str) -> ET.Element:
    match = re.search(rf'<div id="{container}">(<svg.*?</svg>)</div>', html, re.S)
    assert match, f"#{container} holds an SVG chart"
    return ET.fromstring(match.group(1))


def test_monitoring_page_draws_the_request_log(app: Flask,
                                               clients: dict[str, FlaskClient]) -> None:
    log_requests(app.config["APPLIANCE_HOME"])
    viewer = clients["viewer"]
    html = viewer.get("/monitoring/churn?hours=1").get_data(as_text=True)
    traffic = svgs(html, "traffic-chart")
    lines = traffic.findall(f"{SVG}polyline")
    assert len(lines) == 2, "requests and errors per minute"
    assert len(lines[0].get("points", "").split()) >= 10, "one point per minute of traffic"
    latency = svgs(html, "latency-chart")
    assert {t.text for t in latency.iter(f"{SVG}title")} >= {"v1 p50", "v1 p99"}
    # Without a stored check, the distribution compares the profile with sampled inputs.
    assert "108 kept rows" in html  # the 500s are not answered rows
    bars = ET.fromstring(re.search(r'<figure><figcaption>age</figcaption>(<svg.*?</svg>)',
                                   html, re.S).group(1)).findall(f"{SVG}rect")
    assert {b.get("class") for b in bars} == {"bar b0", "bar b1"}
    # The totals table: 120 requests, 12 failures.
    assert re.search(r"<td>1</td><td>live</td><td>120</td><td>0</td><td>12</td>", html)
    assert 'id="run-check"' not in html, "a viewer may not run a check"
    data = viewer.get("/api/models/churn/monitoring?hours=1").get_json()
    assert sum(r["requests"] for r in data["traffic"]) == REQUESTS
    assert data["distributions"][0]["feature"] == "age"


def test_a_check_from_the_page_records_drift_and_raises_an_alert(
        app: Flask, clients: dict[str, FlaskClient]) -> None:
    log_requests(app.config["APPLIANCE_HOME"])
    viewer, operator = clients["viewer"], clients["operator"]
    assert viewer.post("/monitoring/churn/check",
                       data={"csrf_token": csrf_of(viewer)}).status_code == 403
    done = operator.post("/monitoring/churn/check", data={"csrf_token": csrf_of(operator)})
    assert done.status_code == 303
    html = operator.get("/monitoring/churn?hours=1").get_data(as_text=True)
    drift = svgs(html, "drift-chart")
    assert "no data" not in ET.tostring(drift, encoding="unicode")
    assert re.search(r"check \d+\)", html), "distributions now come from the stored check"
    assert "age <span class=\"bad\">drifted</span>" in html, "ages shifted by 30 years drift"
    # 12 of 120 failed: over monitoring.max_error_rate, so an errors alert is open.
    alerts = operator.get("/api/alerts").get_json()
    kinds = {a["kind"] for a in alerts["alerts"]}
    assert "errors" in kinds and "data_drift" in kinds
    assert alerts["open"] == len(alerts["alerts"])
    overview = operator.get("/").get_data(as_text=True)
    assert f'{alerts["open"]} open' in overview


def test_alerts_are_acknowledged_by_operators_only(app: Flask,
                                                   clients: dict[str, FlaskClient]) -> None:
    log_requests(app.config["APPLIANCE_HOME"])
    operator, viewer = clients["operator"], clients["viewer"]
    api_headers = {"X-CSRF-Token": csrf_of(operator)}
    assert operator.post("/api/models/churn/monitoring/check",
                         headers=api_headers).status_code == 200
    alert = next(a for a in operator.get("/api/alerts").get_json()["alerts"]
                 if a["kind"] == "errors")
    page = viewer.get("/alerts").get_data(as_text=True)
    assert alert["message"] in page and f'id="ack-{alert["id"]}"' not in page
    assert viewer.post(f"/alerts/{alert['id']}/ack",
                       data={"csrf_token": csrf_of(viewer)}).status_code == 403
    assert f'id="ack-{alert["id"]}"' in operator.get("/alerts").get_data(as_text=True)
    done = operator.post(f"/alerts/{alert['id']}/ack", data={"csrf_token": csrf_of(operator)})
    assert done.status_code == 303
    after = {a["id"]: a for a in operator.get("/api/alerts").get_json()["alerts"]}
    assert after[alert["id"]]["state"] == "acknowledged"
    assert after[alert["id"]]["acked_by"] == "operator"
    again = operator.post(f"/api/alerts/{alert['id']}/ack", headers=api_headers)
    assert again.status_code == 409


def test_feedback_api_stores_labels_of_answered_requests(
        app: Flask, clients: dict[str, FlaskClient]) -> None:
    ids = log_requests(app.config["APPLIANCE_HOME"], failures=0)
    operator, viewer = clients["operator"], clients["viewer"]
    records = [{"request_id": i, "label": "1.0"} for i in ids[:40]]
    records.append({"request_id": "never-answered", "label": "2.0"})
    refused = viewer.post("/api/models/churn/feedback", json={"records": records},
                          headers={"X-CSRF-Token": csrf_of(viewer)})
    assert refused.status_code == 403
    headers = {"X-CSRF-Token": csrf_of(operator)}
    stored = operator.post("/api/models/churn/feedback", json={"records": records},
                           headers=headers)
    assert stored.status_code == 200
    result = stored.get_json()
    assert result["stored"] == 40 and result["unknown"] == 1
    bad = operator.post("/api/models/churn/feedback", json={"records": "nope"}, headers=headers)
    assert bad.status_code == 400 and "feedback" in bad.get_json()["error"]
    assert operator.post("/api/models/churn/feedback", json=[1],
                         headers=headers).status_code == 400


def test_monitoring_pages_answer_from_the_roll_ups_alone(app: Flask,
                                                          clients: dict[str, FlaskClient]) -> None:
    from appliance.config import parse_config
    from appliance.monitoring import run_retention

    home = app.config["APPLIANCE_HOME"]
    log_requests(home)
    mon = home.monitoring_db()
    try:
        assert run_retention(mon, parse_config({})).rolled_rows == REQUESTS
    finally:
        mon.close()
    viewer = clients["viewer"]
    before = viewer.get("/api/models/churn/monitoring?hours=1").get_json()
    index = viewer.get("/monitoring").get_data(as_text=True)
    # Every rolled-up raw row but the newest (whose id must never come back) goes, as
    # retention deletes them: the traffic figures stay the same to the last digit.
    mon = home.monitoring_db()
    try:
        with immediate(mon):
            mon.execute("DELETE FROM requests WHERE id < (SELECT MAX(id) FROM requests)")
        assert mon.execute("SELECT COUNT(*) FROM requests").fetchone()[0] == 1
    finally:
        mon.close()
    after = viewer.get("/api/models/churn/monitoring?hours=1").get_json()
    assert sum(r["requests"] for r in after["totals"]) == REQUESTS
    assert after["traffic"] == before["traffic"] and after["totals"] == before["totals"]
    assert viewer.get("/monitoring").get_data(as_text=True) == index
    html = viewer.get("/monitoring/churn?hours=1").get_data(as_text=True)
    assert re.search(r"<td>1</td><td>live</td><td>120</td><td>0</td><td>12</td>", html)
