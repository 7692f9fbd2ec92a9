"""Delayed labels: one request per label however often a client retried it, and no stored
labels without their audit entry."""

from __future__ import annotations

import hashlib
import json
import time

import numpy as np
import pytest
from helpers.monitoring import features, log_requests, train_served_model, truth

from appliance.monitoring import Window, add_feedback
from appliance.monitoring.feedback import labelled, performance
from appliance.monitoring.retraining import production_rows
from appliance.storage.db import immediate


@pytest.fixture
def served(home, tmp_path):
    return train_served_model(home, tmp_path)


def _again(home, rid: str, *, dt: float, status: int = 200, route: str = "primary",
           sampled: bool = True, flip: bool = False) -> None:
    """Log another attempt of request ``rid``, ``dt`` seconds after its first one."""
    mon = home.monitoring_db()
    try:
        first = mon.execute("SELECT * FROM requests WHERE request_id = ? ORDER BY id LIMIT 1",
                            [rid]).fetchone()
        row = dict(zip([d[0] for d in mon.execute("SELECT * FROM requests LIMIT 0").description],
                       first, strict=True))
        del row["id"]
        outputs = json.loads(row["outputs"])
        if flip:
            outputs["probabilities"] = [p[::-1] for p in outputs["probabilities"]]
        row.update(ts=row["ts"] + dt, minute=int((row["ts"] + dt) // 60), status=status,
                   route=route, outputs=json.dumps(outputs) if sampled else None,
                   inputs=row["inputs"] if sampled else None)
        with immediate(mon):
            mon.execute(f"INSERT INTO requests ({', '.join(row)})"
                        f" VALUES ({', '.join('?' * len(row))})", list(row.values()))
    finally:
        mon.close()


def _audit(home, action: str) -> list[dict]:
    db = home.db()
    try:
        return [json.loads(e)["details"] for (e,) in db.execute(
            "SELECT entry FROM audit_log WHERE action = ? ORDER BY seq", [action])]
    finally:
        db.close()


def _labels(home) -> int:
    mon = home.monitoring_db()
    try:
        return int(mon.execute("SELECT COUNT(*) FROM feedback").fetchone()[0])
    finally:
        mon.close()


def test_a_retried_request_id_counts_once_joined_to_its_latest_answer(home, served,
                                                                      tmp_path) -> None:
    start = time.time() - 600
    f = features(20, 41)
    ids = log_requests(home, served, f, start=start, prefix="r")
    _again(home, "r-0", dt=0.25)  # two successful retries of the same request
    _again(home, "r-0", dt=0.5)
    _again(home, "r-1", dt=0.5, flip=True)  # the retry's answer is the one the client got
    _again(home, "r-2", dt=0.25, status=503, sampled=False)  # failed retry: not an answer
    _again(home, "r-2", dt=0.5, route="shadow", flip=True)  # shadow copy: not an answer
    _again(home, "r-3", dt=0.5, sampled=False)  # its latest answer was not sampled
    labels = truth(f)
    path = tmp_path / "labels.csv"
    path.write_text("request_id,label\n" + "".join(
        f"{i},{lab}\n" for i, lab in zip(ids, labels, strict=True)))

    result = add_feedback(home, "buyer", path, actor="t")
    assert (result.stored, result.unknown, result.unsampled) == (20, 0, 1)

    mon = home.monitoring_db()
    try:
        found = labelled(mon, "buyer", Window.last(60))
        rows = production_rows(mon, "buyer", start - 1,
                               [{"name": "x1", "type": "numeric"},
                                {"name": "label", "type": "categorical"}], "label")
        answers = {}  # (request id, attempt) -> probabilities of its one row
        for rid, outputs in mon.execute("SELECT request_id, outputs FROM requests"
                                        " WHERE request_id IN ('r-1', 'r-2') ORDER BY id"):
            n = sum(1 for key in answers if key[0] == rid)
            answers[(rid, n)] = json.loads(outputs)["probabilities"][0] if outputs else None
    finally:
        mon.close()
    data = found[served.version]
    # one label per request: 19 sampled (r-3's answer was not), not 23 (one per attempt)
    assert len(data.labels) == 19 and len(rows) == 19
    assert sorted(data.labels) == sorted(lab for i, lab in enumerate(labels) if i != 3)
    assert data.ts.tolist() == sorted(data.ts.tolist())
    at = {round(float(t) - start, 2): out for t, out in zip(data.ts, data.outputs, strict=True)}
    assert 1.0 not in at and at[1.5] == answers[("r-1", 1)]  # the retry's answer
    assert answers[("r-1", 1)] != answers[("r-1", 0)]
    assert at[2.0] == answers[("r-2", 0)] and 2.25 not in at and 2.5 not in at
    assert 3.0 not in at and 3.5 not in at  # r-3: its latest answer was not sampled
    metrics, _ = performance(served, data)
    assert metrics["count"] == 19

    details = _audit(home, "feedback.add")
    expected = "".join(f"{i},0,{lab}\n" for i, lab in zip(ids, labels, strict=True))
    assert details == [{"source": "labels.csv", "stored": 20, "replaced": 0, "unknown": 0,
                        "unsampled": 1,
                        "sha256": hashlib.sha256(expected.encode()).hexdigest()}]


def test_labels_are_not_stored_when_their_audit_entry_can_not_be(home, served, runner,
                                                                 tmp_path) -> None:
    ids = log_requests(home, served, features(10, 42), start=time.time() - 300, prefix="a")
    path = tmp_path / "labels.csv"
    path.write_text("request_id,label\n" + "".join(f"{i},true\n" for i in ids))
    db = home.db()
    db.execute("CREATE TRIGGER no_audit BEFORE INSERT ON audit_log"
               " BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END")
    db.close()

    r = runner("feedback", "add", "buyer", str(path))
    assert r.exit_code == 1, r.output
    assert "audit entry could not be written" in r.stderr and "disk I/O error" in r.stderr
    assert "Traceback" not in r.output
    assert _labels(home) == 0


def test_a_failed_store_leaves_its_audit_entry_and_a_failed_entry(home, served, runner,
                                                                  tmp_path) -> None:
    ids = log_requests(home, served, features(10, 43), start=time.time() - 300, prefix="s")
    path = tmp_path / "labels.csv"
    path.write_text("request_id,label\n" + "".join(f"{i},false\n" for i in ids))
    mon = home.monitoring_db()
    mon.execute("CREATE TRIGGER no_labels BEFORE INSERT ON feedback"
                " BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END")
    mon.close()

    r = runner("feedback", "add", "buyer", str(path))
    assert r.exit_code == 1, r.output
    assert "could not be stored" in r.stderr and "disk is full" in r.stderr
    assert _labels(home) == 0
    added, failed = _audit(home, "feedback.add"), _audit(home, "feedback.add.failed")
    assert len(added) == 1 and added[0]["stored"] == 10
    assert failed == [{"sha256": added[0]["sha256"], "error": "database or disk is full"}]


def test_production_rows_come_in_request_id_order_not_finishing_order(home, served,
                                                                      tmp_path) -> None:
    # The "b" requests finished (were logged) before the "a" ones; the dataset still lists
    # a-0..a-4 before b-0..b-4, so the same labels always make the same rows and split.
    start = time.time() - 600
    fb, fa = features(5, 7), features(5, 8)
    ids = log_requests(home, served, fb, start=start, prefix="b")
    ids += log_requests(home, served, fa, start=start + 100, prefix="a")
    labels = list(truth(fb)) + list(truth(fa))
    path = tmp_path / "labels.csv"
    path.write_text("request_id,label\n" + "".join(
        f"{i},{lab}\n" for i, lab in zip(ids, labels, strict=True)))
    assert add_feedback(home, "buyer", path, actor="t").stored == 10

    mon = home.monitoring_db()
    try:
        rows = production_rows(mon, "buyer", start - 1,
                               [{"name": "x1", "type": "numeric"},
                                {"name": "label", "type": "categorical"}], "label")
    finally:
        mon.close()
    want = [float(np.float32(v)) for v in list(fa["x1"]) + list(fb["x1"])]
    assert [float(r[0]) for r in rows] == pytest.approx(want, rel=1e-6)
    assert [r[1] for r in rows] == [str(v) for v in list(truth(fa)) + list(truth(fb))]
