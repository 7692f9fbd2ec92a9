"""Roll-ups and retention of the request log: a year of traffic on one disk, and pages whose
time does not grow with it."""

from __future__ import annotations

import json
import time
from datetime import datetime

import numpy as np
import pytest
from helpers.queue import fast_config

from appliance.config import parse_config
from appliance.errors import BadInput
from appliance.jobs import KINDS
from appliance.jobs.retention import validate_retention_params
from appliance.monitoring import Window, rollup, run_retention, served_models, traffic
from appliance.monitoring.rollup import bucket, bucket_value, last_rolled_id
from appliance.scheduler.daemon import SchedulerDaemon
from appliance.serving.requestlog import COLUMNS
from appliance.storage.db import immediate

DAY = 86400.0


def insert(home, rows) -> None:
    mon = home.monitoring_db()
    with immediate(mon):
        mon.conn.executemany(f"INSERT INTO requests ({', '.join(COLUMNS)}) VALUES "
                             f"({', '.join('?' for _ in COLUMNS)})", rows)
    mon.close()


def traffic_rows(start: float, minutes: int, per_minute: int, seed: int, *, model="m",
                 version=1, inputs=False) -> list[tuple]:
    rng = np.random.default_rng(seed)
    rows = []
    for minute in range(minutes):
        lat = rng.lognormal(np.log(3000), 0.6, size=per_minute).astype(int)
        for i in range(per_minute):
            ts = start + minute * 60 + i * (59.0 / per_minute)
            status = 500 if i % 25 == 3 else 400 if i % 25 == 7 else 200
            route = "shadow" if i % 10 == 9 else "primary"
            rows.append((ts, int(ts // 60), model, version, route, f"{seed}-{minute}-{i}",
                         status, int(lat[i]), 40, 1 + i % 8, 1, None,
                         json.dumps({"x": [[1.0]]}) if inputs else None,
                         json.dumps({"y": [[2.0]]}) if inputs else None))
    return rows


def test_the_sketch_reads_quantiles_within_two_percent() -> None:
    rng = np.random.default_rng(1)
    values = rng.lognormal(8, 1.0, size=20_000)
    sketch: dict[int, int] = {}
    for v in values:
        sketch[bucket(v)] = sketch.get(bucket(v), 0) + 1
    from appliance.monitoring.rollup import sketch_quantiles
    for q, got in zip((0.5, 0.95, 0.99), sketch_quantiles(sketch, (0.5, 0.95, 0.99)),
                      strict=True):
        assert got == pytest.approx(np.quantile(values, q, method="lower"), rel=0.021)
    assert bucket_value(bucket(1000.0)) == pytest.approx(1000.0, rel=0.02)


def exact_quantiles(home, start: float) -> dict[tuple[int, str], list[float]]:
    """p50/p95/p99 (numpy's 'lower' rank) in ms of the answered raw rows, per minute and
    route: what the sketch must come within 2% of."""
    mon = home.monitoring_db()
    found: dict[tuple[int, str], list[float]] = {}
    for minute, route, latency in mon.execute(
            "SELECT minute, route, latency_us FROM requests WHERE status < 400"):
        key = (int(minute * 60 - start), "shadow" if route == "shadow" else "live")
        found.setdefault(key, []).append(latency / 1000.0)
    mon.close()
    return {k: [float(np.quantile(v, q, method="lower")) for q in (0.5, 0.95, 0.99)]
            for k, v in found.items()}


def test_traffic_is_the_same_from_roll_ups_as_from_raw_rows(home) -> None:
    start = 60 * 29_000_000.0
    insert(home, traffic_rows(start, 5, 200, 1))
    window = Window(start, start + 300)
    mon = home.monitoring_db()
    exact = traffic(mon, "m", window)
    report = rollup(mon, chunk_ids=350)  # several passes, minutes split between them
    assert report.rolled_rows == 1000 and last_rolled_id(mon) == 1000
    counts = ("version", "route", "minute", "requests", "rows", "client_errors", "failures")
    assert [{k: r[k] for k in counts} for r in traffic(mon, "m", window)] == [
        {k: r[k] for k in counts} for r in exact]
    mon.close()
    # More rows for a minute already rolled up: read raw beside the roll-up, then merged in.
    insert(home, traffic_rows(start + 60, 1, 50, 2))
    quantiles = exact_quantiles(home, start)
    mon = home.monitoring_db()
    mixed = traffic(mon, "m", window)
    rollup(mon)
    rolled = traffic(mon, "m", window)
    totals = traffic(mon, "m", window, by_minute=False)
    mon.close()
    assert mixed == rolled
    assert [(r["minute"], r["route"]) for r in rolled] == [
        (r["minute"], r["route"]) for r in exact]
    for new, old in zip(rolled, exact, strict=True):
        second = new["minute"] == exact[2]["minute"]
        assert new["requests"] == old["requests"] + (
            (45 if new["route"] == "live" else 5) if second else 0)
        offset = int(datetime.fromisoformat(new["minute"]).timestamp() - start)
        expected = quantiles[(offset, new["route"])]
        got = [new["p50_ms"], new["p95_ms"], new["p99_ms"]]
        assert got == pytest.approx(expected, rel=0.021)
    live = [r for r in totals if r["route"] == "live"][0]
    assert (live["requests"], live["failures"], live["client_errors"]) == (945, 42, 42)


def test_retention_deletes_rolled_up_rows_and_empties_old_inputs(home, runner) -> None:
    now = time.time()
    old = traffic_rows(now - 40 * DAY, 2, 30, 3, inputs=True)
    middle = traffic_rows(now - 10 * DAY, 2, 30, 4, inputs=True)
    recent = traffic_rows(now - 3600, 2, 30, 5, inputs=True)
    insert(home, old + middle + recent)
    config = parse_config({"monitoring": {"retention_days": 30, "input_retention_days": 7}})
    mon = home.monitoring_db()
    before = traffic(mon, "m", Window(now - 41 * DAY, now), by_minute=False)
    report = run_retention(mon, config, now=now)
    assert (report.rolled_rows, report.deleted_rows, report.emptied_inputs) == (180, 60, 60)
    kept = mon.execute("SELECT COUNT(*), COUNT(inputs), COUNT(outputs) FROM requests").fetchone()
    assert kept == (120, 60, 60)
    # The deleted minutes are still answered from their roll-ups.
    after = traffic(mon, "m", Window(now - 41 * DAY, now), by_minute=False)
    assert [r["requests"] for r in after] == [r["requests"] for r in before]
    assert served_models(mon) == [{"model": "m", "requests": 180,
                                   "last_ts": pytest.approx(max(r[0] for r in recent))}]
    # Nothing more to do the second time; the newest row is never deleted.
    again = run_retention(mon, config, now=now + 365 * DAY)
    assert again.rolled_rows == 0 and again.deleted_rows == 119
    assert mon.execute("SELECT COUNT(*) FROM requests").fetchone()[0] == 1
    mon.close()
    insert(home, traffic_rows(now, 1, 10, 6))
    mon = home.monitoring_db()
    assert rollup(mon).rolled_rows == 10  # new ids come after the kept newest one
    mon.close()
    r = runner("monitoring", "retention", "--json")
    assert r.exit_code == 0, r.output
    assert set(json.loads(r.stdout)) >= {"rolled_rows", "deleted_rows", "emptied_inputs"}


def test_retention_zero_keeps_every_row(home) -> None:
    insert(home, traffic_rows(time.time() - 400 * DAY, 1, 20, 7, inputs=True))
    config = parse_config({"monitoring": {"retention_days": 0, "input_retention_days": 0}})
    mon = home.monitoring_db()
    report = run_retention(mon, config)
    assert (report.rolled_rows, report.deleted_rows, report.emptied_inputs) == (20, 0, 0)
    mon.close()


def test_the_job_kind_and_the_scheduler_run_retention(home) -> None:
    assert "monitoring-retention" in KINDS
    with pytest.raises(BadInput, match="unknown parameter 'days'"):
        validate_retention_params({"days": 3})
    insert(home, traffic_rows(time.time() - 120, 1, 20, 8))
    daemon = SchedulerDaemon(home, fast_config(**{"monitoring__retention_interval_minutes": 1}))
    daemon.start()
    try:
        deadline = time.monotonic() + 60
        rolled = 0
        while time.monotonic() < deadline and rolled < 20:
            mon = home.monitoring_db()
            rolled = last_rolled_id(mon)
            mon.close()
            time.sleep(0.05)
    finally:
        daemon.stop()
    assert rolled == 20


def test_doctor_warns_when_the_request_log_would_fill_the_disk_within_30_days(
        home, monkeypatch) -> None:
    import shutil

    from appliance.system import doctor

    insert(home, traffic_rows(time.time() - 3600, 10, 100, 9, inputs=True))
    config = parse_config({})
    real = shutil.disk_usage

    def usage(free: int):
        def fake(path):  # type: ignore[no-untyped-def]
            total, used, _ = real(path)
            return type(real(path))(total, used, free)
        return fake

    monkeypatch.setattr(doctor.shutil, "disk_usage", usage(10 ** 15))
    ok = doctor._request_log_growth(home, config)
    assert ok.ok and "1000 requests in the last 24 h" in ok.detail
    monkeypatch.setattr(doctor.shutil, "disk_usage", usage(1024 * 1024))
    full = doctor._request_log_growth(home, config)
    assert not full.ok and "monitoring.retention_days" in full.detail
    # With raw rows kept one day and the oldest already that old, only roll-ups grow.
    short = parse_config({"monitoring": {"retention_days": 0.01}})
    mon = home.monitoring_db()
    rollup(mon)
    mon.close()
    assert doctor._request_log_growth(home, short).ok
    names = {c.name for c in doctor.run_checks(home, config)}
    assert "request log growth" in names


def test_doctor_projects_language_model_traffic_too(home, monkeypatch) -> None:
    """Language-model requests, rolled up or not, count in the projection with their own
    row size and kept prompts; a disk that holds the projection passes, one that does not
    fails, and the roll-ups' keys the doctor reads are the ones the roll-ups write."""
    import shutil

    from appliance.monitoring.llm_rollup import rollup_llm
    from appliance.monitoring.rollup import LLM_STATE_KEY, STATE_KEY
    from appliance.system import doctor

    assert (doctor.STATE_KEY, doctor.LLM_STATE_KEY) == (STATE_KEY, LLM_STATE_KEY)
    now = time.time()
    mon = home.monitoring_db()
    with immediate(mon):
        for i in range(600):
            mon.execute(
                "INSERT INTO llm_requests (ts, day, model, version, endpoint, status, stream,"
                " prompt_tokens, completion_tokens, queue_ms, e2e_ms, device, device_s, cost,"
                " currency, prompt, completion) VALUES (?, '2026-01-01', 'chat', 1, 'chat',"
                " 200, 0, 5, 3, 0.1, 2.0, 'cpu', 0.001, 0, '', ?, 'hello')",
                [now - 3600 + i, "x" * 1000])
    rollup_llm(mon)  # half rolled up, half not: both count
    with immediate(mon):
        for i in range(400):
            mon.execute(
                "INSERT INTO llm_requests (ts, day, model, version, endpoint, status, stream,"
                " prompt_tokens, completion_tokens, queue_ms, e2e_ms, device, device_s, cost,"
                " currency, prompt, completion) VALUES (?, '2026-01-01', 'chat', 1, 'chat',"
                " 200, 0, 5, 3, 0.1, 2.0, 'cpu', 0.001, 0, '', ?, 'hello')",
                [now - 60 + i * 0.1, "x" * 1000])
    mon.close()
    real = shutil.disk_usage

    def free(n: int):  # type: ignore[no-untyped-def]
        def fake(path):  # type: ignore[no-untyped-def]
            total, used, _ = real(path)
            return type(real(path))(total, used, n)
        return fake

    monkeypatch.setattr(doctor.shutil, "disk_usage", free(10 ** 15))
    config = parse_config({})
    ok = doctor._request_log_growth(home, config)
    assert ok.ok and "1000 language-model requests" in ok.detail, ok.detail
    assert "+12 MiB in 30 days" in ok.detail and not ok.detail.startswith("0 requests"), \
        ok.detail  # 1000 a day: ~170 bytes a row for 30 days, a 1 kB prompt for 7
    monkeypatch.setattr(doctor.shutil, "disk_usage", free(8 * 1024 * 1024))
    full = doctor._request_log_growth(home, config)
    assert not full.ok, full.detail


def test_retention_empties_old_language_model_prompts_and_answers(home) -> None:
    now = time.time()
    mon = home.monitoring_db()
    for ts in (now - 10 * DAY, now - 3600):
        mon.execute(
            "INSERT INTO llm_requests (ts, day, model, version, endpoint, status, stream,"
            " prompt_tokens, completion_tokens, queue_ms, e2e_ms, device, device_s, cost,"
            " currency, prompt, completion) VALUES (?, '2026-01-01', 'chat', 1, 'chat', 200,"
            " 0, 5, 3, 0.1, 2.0, 'cpu', 0.001, 0, '', 'my name is Ada', 'hello Ada')", [ts])
    mon.conn.commit()
    config = parse_config({"monitoring": {"retention_days": 30, "input_retention_days": 7}})
    report = run_retention(mon, config, now=now)
    assert report.emptied_texts == 1
    rows = mon.execute("SELECT prompt, completion, prompt_tokens FROM llm_requests"
                       " ORDER BY ts").fetchall()
    assert [tuple(r) for r in rows] == [(None, None, 5), ("my name is Ada", "hello Ada", 5)]
    mon.close()


def test_page_reads_of_raw_rows_after_a_roll_up_are_bounded_by_an_index(home) -> None:
    """What the pages read of the raw rows once rolled up: the rows after the high-water mark
    by id, and a page's newest kept inputs through their own index with a limit."""
    from appliance.monitoring.traffic import samples

    start = time.time() - 1800
    insert(home, traffic_rows(start, 20, 30, 4, inputs=True))
    mon = home.monitoring_db()
    rollup(mon)
    insert(home, traffic_rows(start + 1200, 1, 10, 5))  # a few rows after the roll-up
    window = Window(start, start + 1800)
    statements: list[str] = []
    mon.conn.set_trace_callback(statements.append)
    try:
        traffic(mon, "m", window)
        traffic(mon, "m", window, by_minute=False)
        served_models(mon)
        kept = samples(mon, "m", window, version=1, limit=25)
    finally:
        mon.conn.set_trace_callback(None)
    assert kept.rows == 25
    # The newest 25 kept, answered, live requests, oldest first.
    newest = [r[0] for r in mon.execute(
        "SELECT request_id FROM requests WHERE inputs IS NOT NULL AND status < 400 AND route"
        " != 'shadow' ORDER BY minute DESC, id DESC LIMIT 25")]
    assert kept.request_ids == list(reversed(newest))
    raw = [s for s in statements if "FROM requests" in s]
    assert len(raw) == 4
    for sql in raw:
        plan = " | ".join(row[3] for row in mon.execute("EXPLAIN QUERY PLAN " + sql))
        assert "SCAN requests" not in plan, (sql, plan)
        if "inputs IS NOT NULL" in sql:
            assert "USING INDEX requests_kept" in plan, plan
        else:
            assert "USING INTEGER PRIMARY KEY (rowid>?)" in plan, plan
    mon.close()
