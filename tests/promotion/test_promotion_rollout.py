"""Staged rollout: shadow -> canary -> production when no worse; automatic rollback when worse."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from helpers.promotion import ADMIN, MINIMAL_POLICY, imported_home
from helpers.serving import mlp

from appliance import promotion, registry
from appliance.storage.home import Home


@pytest.fixture
def home(tmp_path: Path) -> Home:
    h = imported_home(tmp_path / "home", {1: mlp(1, sizes=(32, 8, 2)), 2: mlp(2, sizes=(32, 8, 2))})
    db = h.db()
    try:
        promotion.set_policy(db, "mlp", MINIMAL_POLICY, actor="root")
    finally:
        db.close()
    promotion.promote(h, "mlp@1", ADMIN)
    return h


def log_requests(home: Home, version: int, route: str, n: int, *, status: int = 200,
                 latency_us: int = 1000, label: int = 0, ts: float | None = None,
                 ids: str = "r") -> None:
    ts = time.time() if ts is None else ts
    mdb = home.monitoring_db()
    try:
        rows = [(ts, int(ts // 60), "mlp", version, route, f"{ids}{i}", status, latency_us, 0, 1,
                 1, None if status < 500 else "injected", None,
                 json.dumps({"label": [label]}) if status < 500 else None) for i in range(n)]
        mdb.conn.executemany(
            "INSERT INTO requests (ts, minute, model, version, route, request_id, status,"
            " latency_us, queue_us, batch_size, rows, error, inputs, outputs)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    finally:
        mdb.close()


def aliases(home: Home) -> dict[str, int]:
    db = home.db()
    try:
        return {r["alias"]: r["version"] for r in registry.list_aliases(db)}
    finally:
        db.close()


def test_a_failing_canary_rolls_back_automatically(home: Home) -> None:
    result = promotion.promote(home, "mlp@2", ADMIN, to="canary")
    assert result.rollout_id is not None
    assert aliases(home) == {"production": 1, "canary": 2}
    db = home.db()
    try:
        assert registry.resolve(db, "mlp@2").tags["canary_weight"] == "0.5"
    finally:
        db.close()
    later = time.time() + 1
    log_requests(home, 1, "primary", 30, ts=later)
    log_requests(home, 2, "canary", 5, ts=later)
    steps = promotion.advance_rollouts(home, now=later + 1)
    assert [s.decision for s in steps] == ["wait"]  # too few requests to judge yet
    log_requests(home, 2, "canary", 10, status=500, ts=later, ids="bad")
    steps = promotion.advance_rollouts(home, now=later + 2)
    assert [(s.decision, s.state_after) for s in steps] == [("rollback", "rolled_back")]
    assert "error rate" in steps[0].reasons[0]
    assert aliases(home) == {"production": 1}
    db = home.db()
    try:
        assert "canary_weight" not in registry.resolve(db, "mlp@2").tags
        status = promotion.rollout_status(db, "mlp")
        last = [r[0] for r in db.execute("SELECT action FROM audit_log ORDER BY seq DESC LIMIT 4")]
    finally:
        db.close()
    assert status[0]["state"] == "rolled_back"
    assert last[0] == "model.rollout.rollback"
    assert promotion.advance_rollouts(home, now=later + 3) == []


def test_a_healthy_candidate_goes_shadow_canary_production(home: Home) -> None:
    promotion.promote(home, "mlp@2", ADMIN, to="shadow")
    assert aliases(home) == {"production": 1, "shadow": 2}
    t = time.time() + 1
    log_requests(home, 1, "primary", 25, ts=t)
    log_requests(home, 2, "shadow", 25, ts=t)  # same ids, same outputs: full agreement
    steps = promotion.advance_rollouts(home, now=t + 1)
    assert [(s.decision, s.state_after) for s in steps] == [("advance", "canary")]
    assert steps[0].stats["agreement"] == 1.0
    assert aliases(home) == {"production": 1, "canary": 2}
    t2 = t + 5
    log_requests(home, 1, "primary", 25, ts=t2, ids="p")
    log_requests(home, 2, "canary", 25, ts=t2, ids="c")
    steps = promotion.advance_rollouts(home, now=t2 + 1)
    assert [(s.decision, s.state_after) for s in steps] == [("advance", "production")]
    assert aliases(home) == {"production": 2}
    db = home.db()
    try:
        acts = [r[0] for r in db.execute(
            "SELECT action FROM audit_log WHERE action LIKE 'model.rollout.%' ORDER BY seq")]
    finally:
        db.close()
    assert acts == ["model.rollout.start", "model.rollout.advance", "model.rollout.advance"]


def test_shadow_disagreement_rolls_back(home: Home) -> None:
    promotion.promote(home, "mlp@2", ADMIN, to="shadow")
    t = time.time() + 1
    log_requests(home, 1, "primary", 25, ts=t, label=0)
    log_requests(home, 2, "shadow", 25, ts=t, label=1)
    steps = promotion.advance_rollouts(home, now=t + 1)
    assert steps[0].decision == "rollback" and "agreement" in steps[0].reasons[0]
    assert aliases(home) == {"production": 1}


def test_rollout_cli_shows_and_ticks(home: Home, runner_for) -> None:
    promotion.promote(home, "mlp@2", ADMIN, to="canary")
    r = runner_for(home)("models", "rollout", "mlp", "--advance")
    assert r.exit_code == 0, r.output
    assert "wait" in r.stdout and "canary" in r.stdout
    r = runner_for(home)("models", "rollout", "mlp", "--abort", "--reason", "enough")
    assert r.exit_code == 0 and "rolled_back" in r.stdout
    assert aliases(home) == {"production": 1}


@pytest.fixture
def runner_for():
    from click.testing import CliRunner

    from appliance.cli import main

    return lambda home: (lambda *args: CliRunner().invoke(main, ["--home", str(home.root),
                                                                 *args]))


def test_labelled_quality_reads_class_indices_by_name(tmp_path: Path) -> None:
    from appliance.storage.home import init_home

    h = Home(tmp_path / "q")
    init_home(h)
    mdb = h.monitoring_db()
    now = time.time()
    for i, (index, label) in enumerate([(1, "yes"), (0, "no"), (1, "no"), (0, "no")]):
        mdb.execute("INSERT INTO requests (ts, minute, model, version, route, request_id, status,"
                    " latency_us, queue_us, batch_size, rows, outputs) VALUES"
                    " (?, ?, 'm', 1, 'primary', ?, 200, 10, 1, 1, 1, ?)",
                    [now, int(now // 60), f"r{i}", json.dumps({"label": [index]})])
        mdb.execute("INSERT INTO feedback (model, request_id, label, received_at, received_by)"
                    " VALUES ('m', ?, ?, ?, 'test')", [f"r{i}", label, now])
    from appliance.promotion.rollout import labelled_quality

    assert labelled_quality(mdb, "m", 1, now - 1, now + 1, ["no", "yes"]) == 0.75
    # A retry of r2 answered right later: the label is scored once, against the latest answer.
    mdb.execute("INSERT INTO requests (ts, minute, model, version, route, request_id, status,"
                " latency_us, queue_us, batch_size, rows, outputs) VALUES"
                " (?, ?, 'm', 1, 'primary', 'r2', 200, 10, 1, 1, 1, ?)",
                [now + 0.5, int(now // 60), json.dumps({"label": [0]})])
    # Another model's answer to the same id, and a failed request, count for nothing.
    mdb.execute("INSERT INTO requests (ts, minute, model, version, route, request_id, status,"
                " latency_us, queue_us, batch_size, rows, outputs) VALUES"
                " (?, ?, 'other', 1, 'primary', 'r0', 200, 10, 1, 1, 1, ?)",
                [now, int(now // 60), json.dumps({"label": [0]})])
    assert labelled_quality(mdb, "m", 1, now - 1, now + 1, ["no", "yes"]) == 1.0
    mdb.close()
