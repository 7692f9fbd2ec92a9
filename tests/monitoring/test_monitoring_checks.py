"""Monitoring of a served model: traffic aggregates, quality, feedback, drift report, alerts."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from helpers.monitoring import CONFIG, features, log_requests, train_served_model, truth

from appliance.monitoring import Window, list_alerts, run_check, traffic
from appliance.serving.requestlog import COLUMNS
from appliance.storage.db import immediate


@pytest.fixture
def served(home, tmp_path):
    return train_served_model(home, tmp_path)


def test_traffic_aggregates_per_minute_from_the_request_log(home) -> None:
    base = 60 * 29_000_000  # a whole minute
    rng = np.random.default_rng(3)
    rows, expected = [], {}
    for minute in range(3):
        lat = rng.integers(500, 50_000, size=40)
        statuses = [200] * 36 + [400, 400, 500, 503]
        for i, (us, status) in enumerate(zip(lat, statuses, strict=True)):
            rows.append((base + minute * 60 + i, (base + minute * 60 + i) // 60, "m", 2,
                         "primary", f"r{minute}-{i}", status, int(us), 5, 1, 1, None, None,
                         None))
        ok = lat[:36] / 1000.0
        expected[minute] = np.percentile(ok, [50, 95, 99])
    rows.append((base + 5, base // 60, "m", 3, "shadow", "s", 200, 99_000, 0, 1, 1, None, None,
                 None))
    mon = home.monitoring_db()
    with immediate(mon):
        mon.conn.executemany(f"INSERT INTO requests ({', '.join(COLUMNS)}) VALUES "
                             f"({', '.join('?' for _ in COLUMNS)})", rows)
    got = traffic(mon, "m", Window(base, base + 180))
    mon.close()
    live = [r for r in got if r["route"] == "live"]
    assert len(live) == 3 and all(r["version"] == 2 for r in live)
    for minute, r in enumerate(live):
        assert (r["requests"], r["client_errors"], r["failures"]) == (40, 2, 2)
        assert r["error_rate"] == pytest.approx(2 / 40)
        assert [r["p50_ms"], r["p95_ms"], r["p99_ms"]] == pytest.approx(list(expected[minute]))
    shadow = [r for r in got if r["route"] == "shadow"]
    assert shadow == [{**shadow[0], "version": 3, "requests": 1}]


def test_quality_flags_missing_out_of_range_and_unseen(home, served) -> None:
    f = features(200, 5)
    f["x2"][:80] = np.nan  # training has 2.5% missing
    f["price"][:30] = 1e6  # far outside the training range
    f["colour"][:40] = "purple"  # never seen in training
    log_requests(home, served, f, start=time.time() - 900, prefix="q")
    check = run_check(home, "buyer", window=Window.last(60), config=CONFIG, record=False)
    by_name = {q.name: q for q in check.quality.features}
    assert by_name["x2"].missing == 80 and by_name["x2"].breaches
    assert by_name["price"].out_of_range == 30 and by_name["price"].out_of_range_share == 0.15
    assert by_name["colour"].unseen == 40 and by_name["colour"].unseen_examples == ["purple"]
    assert not by_name["x1"].breaches and not by_name["member"].breaches
    assert "quality" in {b.kind for b in check.breaches}


def test_feedback_join_bad_lines_and_unknown_ids(home, served, runner, tmp_path) -> None:
    f = features(40, 6)
    ids = log_requests(home, served, f, start=time.time() - 300, prefix="fb")
    labels = truth(f)
    bad = tmp_path / "bad.csv"
    bad.write_text("request_id,label\nfb-0,yes\nfb-1,maybe\n,no\nfb-3,no\n")
    r = runner("feedback", "add", "buyer", str(bad))
    assert r.exit_code == 2
    assert "line 3" in r.stderr and "maybe" in r.stderr and "line 4" in r.stderr
    mon = home.monitoring_db()
    assert mon.execute("SELECT COUNT(*) FROM feedback").fetchone()[0] == 0  # nothing half-written
    good = tmp_path / "good.csv"
    good.write_text("request_id,label\n" + "".join(f"{i},{'yes' if lab == 'true' else 'no'}\n"
                                                   for i, lab in zip(ids, labels, strict=True))
                    + "never-served,yes\nalso-unknown,no\n")
    r = runner("feedback", "add", "buyer", str(good), "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert (out["stored"], out["unknown"], out["replaced"]) == (40, 2, 0)
    assert out["unknown_examples"] == ["never-served", "also-unknown"]
    stored = dict(mon.execute("SELECT request_id, label FROM feedback").fetchall())
    assert stored == dict(zip(ids, labels, strict=True))
    r = runner("feedback", "add", "buyer", str(good), "--strict")
    assert r.exit_code == 2 and "2 request id(s)" in r.stderr
    mon.close()
    db = home.db()
    actions = [a for (a,) in db.execute("SELECT action FROM audit_log WHERE action = 'feedback.add'")]
    db.close()
    assert actions == ["feedback.add"]


def test_drift_report_detects_injected_shift_and_alerts_once(home, served, runner,
                                                             tmp_path) -> None:
    now = time.time()
    log_requests(home, served, features(400, 11), start=now - 3000, prefix="calm")
    r = runner("drift", "report", "buyer", "--window", "60", "--json")
    assert r.exit_code == 0, r.output
    calm = json.loads(r.stdout)
    assert calm["data_drift"]["dataset_drift"] is False and calm["breaches"] == []
    assert calm["estimate"]["estimate"] is True and "ESTIMATE" in calm["estimate"]["label"]

    log_requests(home, served, features(400, 12, x1_shift=1.0, colours=("red",)),
                 start=now - 500, prefix="shift", spacing=1.0)
    # A report that can not be written is refused before the check is recorded or alerted.
    r = runner("drift", "report", "buyer", "--window", "10", "--html",
               str(tmp_path / "missing" / "report.html"))
    assert r.exit_code == 2 and "folder" in r.stderr and "does not exist" in r.stderr
    db = home.db()
    assert list_alerts(db) == []
    db.close()
    html = tmp_path / "report.html"
    r = runner("drift", "report", "buyer", "--window", "10", "--html", str(html))
    assert r.exit_code == 1, r.output
    assert "BREACH data_drift" in r.stdout
    page = html.read_text()
    assert "<svg" in page and "http" not in page.replace("http://www.w3.org/2000/svg", "")
    mon = home.monitoring_db()
    checks = list(mon.query("SELECT * FROM checks ORDER BY id"))
    mon.close()
    assert [c["data_drift"] for c in checks] == [0, 1]
    stored = json.loads(checks[1]["report"])["data_drift"]
    drifted = {c["name"] for c in stored["columns"] if c["drifted"]}
    assert {"x1", "colour", "price"} <= drifted and "x2" not in drifted

    r = runner("drift", "report", "buyer", "--window", "10", "--json")
    assert r.exit_code == 1
    db = home.db()
    alerts = list_alerts(db)
    assert [(a.kind, a.count, a.state) for a in alerts] == [("data_drift", 2, "open")]
    raised = list(db.query("SELECT * FROM audit_log WHERE action = 'alert.raise'"))
    assert len(raised) == 1 and raised[0]["target"] == f"alert:{alerts[0].id}"
    db.close()

    r = runner("alerts", "ack", str(alerts[0].id))
    assert r.exit_code == 0, r.output
    assert runner("alerts", "ack", str(alerts[0].id)).exit_code == 1
    shown = json.loads(runner("alerts", "--json").stdout)
    assert shown[0]["state"] == "acknowledged" and shown[0]["acked_by"]
    # the calm window again: the condition is gone, the alert resolves
    calm_again = run_check(home, "buyer", window=Window(now - 3100, now - 2550), config=CONFIG,
                           actor="t")
    assert calm_again.breaches == [] and calm_again.resolved_alerts == [alerts[0].id]
    assert json.loads(runner("alerts", "--json").stdout) == []
    assert json.loads(runner("alerts", "--all", "--json").stdout)[0]["state"] == "resolved"
    db = home.db()
    assert db.execute("SELECT COUNT(*) FROM audit_log WHERE action = 'alert.resolve'"
                      ).fetchone()[0] == 1
    db.close()


def test_performance_decay_and_concept_drift_from_labels(home, served, tmp_path) -> None:
    from appliance.monitoring import add_feedback

    f = features(600, 21)
    ids = log_requests(home, served, f, start=time.time() - 1200, prefix="c")
    labels = truth(f)
    # the world changes half way: the answer flips
    flipped = labels[:300] + ["false" if v == "true" else "true" for v in labels[300:]]
    path = tmp_path / "labels.csv"
    path.write_text("request_id,label\n" + "".join(f"{i},{lab}\n"
                                                   for i, lab in zip(ids, flipped, strict=True)))
    add_feedback(home, "buyer", path, actor="t")
    check = run_check(home, "buyer", window=Window.last(60), config=CONFIG, actor="t")
    perf = check.performance
    assert perf["labelled_rows"] == 600
    assert perf["metrics"]["accuracy"] < served.metrics["test"]["accuracy"] - 0.05
    assert perf["decay"]["breach"] is True
    assert perf["adwin"]["drift"] and perf["adwin"]["first_at_row"] > 300
    kinds = {b.kind for b in check.breaches}
    assert {"performance", "concept_drift"} <= kinds
    assert set(perf["metrics"]) >= {"accuracy", "precision", "recall", "f1", "roc_auc",
                                    "log_loss"}
