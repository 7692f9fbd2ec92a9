"""A request log that kept a weighted sample beyond its rate: labels join any kept request,
metrics and quality weigh rows by what they stand for, and the report says how rows were
chosen."""

from __future__ import annotations

import time

import numpy as np
import pytest
from helpers.monitoring import CONFIG, features, log_requests, train_served_model, truth

from appliance.monitoring import Window, add_feedback, run_check
from appliance.monitoring.feedback import Labelled, labelled, performance
from appliance.monitoring.quality import QualityLimits, assess
from appliance.monitoring.render import render_html, render_text
from appliance.monitoring.traffic import Samples
from appliance.storage.db import immediate


@pytest.fixture
def served(home, tmp_path):
    return train_served_model(home, tmp_path)


def _beyond_the_limit(home, ids: list[str]) -> None:
    """As the request log leaves it past its rate with keep probability 1/2: every other
    request without inputs or outputs, the kept ones weighing 2."""
    mon = home.monitoring_db()
    try:
        with immediate(mon):
            for k, rid in enumerate(ids):
                if k % 2:
                    mon.execute("UPDATE requests SET inputs = NULL, outputs = NULL"
                                " WHERE request_id = ?", [rid])
                else:
                    mon.execute("UPDATE requests SET weight = 2.0 WHERE request_id = ?", [rid])
    finally:
        mon.close()


def test_labels_join_requests_kept_beyond_the_limit_and_weigh_what_they_stand_for(
        home, served, tmp_path) -> None:
    f = features(200, 31)
    ids = log_requests(home, served, f, start=time.time() - 1000, prefix="w", spacing=2.0)
    _beyond_the_limit(home, ids[100:])
    labels = truth(f)
    wrong = [i for i in range(200) if i % 7 == 0]  # some answers the model gets wrong
    for i in wrong:
        labels[i] = "false" if labels[i] == "true" else "true"
    path = tmp_path / "labels.csv"
    path.write_text("request_id,label\n" + "".join(f"{i},{lab}\n"
                                                   for i, lab in zip(ids, labels, strict=True)))
    result = add_feedback(home, "buyer", path, actor="t")
    # every label is stored; those of the 50 requests whose outputs were not kept are counted
    assert (result.stored, result.unknown, result.unsampled) == (200, 0, 50)

    mon = home.monitoring_db()
    try:
        data = labelled(mon, "buyer", Window.last(60))[served.version]
    finally:
        mon.close()
    assert len(data.labels) == 150
    assert data.weights == [1.0] * 100 + [2.0] * 50
    metrics, errors = performance(served, data)
    # a row of weight 2 counts as two rows: the metrics of the expanded rows
    twice = Labelled(data.version, np.r_[data.ts, data.ts[100:]],
                     data.labels + data.labels[100:], data.outputs + data.outputs[100:])
    expanded, _ = performance(served, twice)
    for key in ("accuracy", "precision", "recall", "f1", "roc_auc", "log_loss"):
        assert metrics[key] == pytest.approx(expanded[key], rel=1e-12), key
    assert metrics["accuracy"] != pytest.approx(float(1 - errors.mean()))  # weights mattered
    assert metrics["count"] == 150.0 and len(errors) == 150

    check = run_check(home, "buyer", window=Window.last(60), config=CONFIG, actor="t",
                      record=False)
    how = ("150 rows from 150 of 200 requests, kept at up to 1000 rows/s, then sampled; "
           "weighted, they stand for 200 requests")
    assert check.selection["how"] == how
    assert (check.selection["rows"], check.selection["requests"], check.selection["answered"],
            check.selection["represented"], check.selection["weighted"]) == (
                150, 150, 200, 200.0, True)
    assert check.performance is not None and check.performance["labelled_rows"] == 150
    assert check.drift is not None and check.drift.current == how
    assert f"rows: {how}" in render_text(check) and f"current: {how}" in render_text(check)
    assert how in render_html(check)
    assert check.as_dict()["data_drift"]["current"] == how
    for column in check.drift.columns:
        assert column.current_count + column.current_missing == 200  # what they stand for
        assert column.stats.get("current_effective_n", 0) < 200


def test_a_window_kept_in_full_says_all_requests(home, served) -> None:
    log_requests(home, served, features(120, 32), start=time.time() - 600, prefix="a")
    check = run_check(home, "buyer", window=Window.last(60), config=CONFIG, actor="t",
                      record=False)
    assert check.selection["how"] == "120 rows from all 120 requests"
    assert check.selection["weighted"] is False
    assert "rows: 120 rows from all 120 requests" in render_text(check)
    assert check.drift is not None
    assert all("current_effective_n" not in c.stats for c in check.drift.columns)


def test_quality_shares_weigh_rows_and_counts_do_not() -> None:
    s = Samples(["a", "b", "c", "d"], [0, 0, 0, 0], np.zeros(4), np.ones(4, dtype=np.int64),
                {"x": [None, 1.0, 2.0, 50.0], "c": ["red", "pink", None, "red"]}, {}, 0,
                np.array([3.0, 1.0, 1.0, 1.0]), 4, 6.0)
    profile = {"columns": {"x": {"min": 0.0, "max": 10.0, "missing_share": 0.0},
                           "c": {"categories": {"red": 5, "blue": 5}, "other": 0}}}
    report = assess(s, {"x": "numeric", "c": "categorical"}, profile, QualityLimits())
    x, c = report.features
    assert (x.missing, x.missing_share) == (1, 0.5)
    assert (x.out_of_range, x.out_of_range_share) == (1, pytest.approx(1 / 3))
    assert (c.missing, c.missing_share) == (1, pytest.approx(1 / 6))
    assert (c.unseen, c.unseen_share) == (1, pytest.approx(1 / 5))


def test_doctor_projects_kept_inputs_apart_from_the_rest_of_a_row(home, served) -> None:
    from appliance.config import parse_config
    from appliance.system import doctor

    log_requests(home, served, features(300, 33), start=time.time() - 3600, prefix="d",
                 spacing=10.0)
    mon = home.monitoring_db()
    try:
        payload = mon.execute("SELECT AVG(LENGTH(CAST(inputs AS BLOB))"
                              " + LENGTH(CAST(outputs AS BLOB))) FROM requests").fetchone()[0]
    finally:
        mon.close()
    check = doctor._request_log_growth(home, parse_config({}))
    assert check.ok, check.detail
    assert "300 requests in the last 24 h" in check.detail
    assert f"plus {payload:.0f} bytes of kept inputs and outputs a request" in check.detail


def test_the_selection_says_about_when_roll_ups_round_the_window_to_minutes() -> None:
    from appliance.monitoring.check import selection

    s = Samples(["a", "b"], [0, 0], np.zeros(2), np.ones(2, dtype=np.int64), {"x": [1.0, 2.0]},
                {}, 0, np.array([1.0, 1.0]), 2, 2.0)
    traffic_rows = [{"version": 1, "route": "live", "requests": 7, "client_errors": 1,
                     "failures": 1}, {"version": 1, "route": "shadow", "requests": 9,
                                      "client_errors": 0, "failures": 0}]
    assert selection(s, traffic_rows, 1, 1000, rounded=True)["how"].startswith(
        "2 rows from 2 of about 5 requests (the others' inputs were not kept")
    assert selection(s, traffic_rows[:1], 1, 1000)["how"].startswith("2 rows from 2 of 5 ")
    none = Samples([], [], np.zeros(0), np.zeros(0, dtype=np.int64), {}, {}, 0, np.zeros(0))
    assert selection(none, traffic_rows, 1, 0)["how"] == "0 rows from none of 5 requests kept their inputs"
