"""The capacity report on synthetic request logs whose service time is known.

The logs are written by a small model of a server here (FIFO, runs of whatever waits up
to the batch limit, each taking a + c·b with ±5% noise), not by the report's own
simulation; the report must recover a and c, predict the logged p95 at the logged
settings, recommend settings no worse, and say whether the peak fits within the SLO.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers.rows import insert_rows

from appliance.capacity import store
from appliance.capacity.report import build, kv_cache_bytes
from appliance.config import parse_config
from appliance.storage.db import Database
from appliance.storage.home import Home

A, C = 0.002, 0.0001  # 2 ms a run, 0.1 ms a row
T0 = 1_700_000_040.0  # on a minute


def served_log(rate: float, seconds: float, max_batch: int, seed: int = 0
               ) -> list[tuple[float, int, int, int]]:
    """(answered at, latency us, queue us, run rows) per request."""
    rng = np.random.default_rng(seed)
    arrivals = T0 + np.cumsum(rng.exponential(1 / rate, int(rate * seconds)))
    out = []
    free, i = 0.0, 0
    while i < len(arrivals):
        start = max(free, arrivals[i])
        j = i
        while j < len(arrivals) and arrivals[j] <= start and j - i < max_batch:
            j += 1
        took = (A + C * (j - i)) * rng.uniform(0.95, 1.05)
        for k in range(i, j):
            out.append((start + took, int((start + took - arrivals[k]) * 1e6),
                        int((start - arrivals[k]) * 1e6), j - i))
        free, i = start + took, j
    return out


def write(mon: Database, log: list[tuple[float, int, int, int]],
          model: str = "m", version: int = 1) -> None:
    insert_rows(mon, "requests", (
        {"ts": ts, "minute": int(ts // 60), "model": model, "version": version,
         "route": "primary", "status": 200, "latency_us": lat, "queue_us": q,
         "batch_size": b, "rows": 1} for ts, lat, q, b in log))


def config(**capacity: object) -> object:
    return parse_config({"capacity": {"replay_minutes": 1, **capacity},
                         "serving": {"max_batch_size": 64}})


def test_the_report_recovers_the_service_time_and_predicts_the_logged_p95(
        home: Home, db: Database) -> None:
    log = served_log(rate=300, seconds=120, max_batch=64)
    with home.monitoring_db() as mon:
        write(mon, log)
        report = build(mon, db, config(), since=T0, until=T0 + 3600, slo_p95_ms=20)
    (m,) = report["models"]
    assert m["enough"], m["missing"]
    s = m["service_time"]
    assert s["a_us"] == pytest.approx(A * 1e6, rel=0.10)
    assert s["c_us"] == pytest.approx(C * 1e6, rel=0.25)
    assert s["source"] == "request log"
    logged = np.percentile([lat for _, lat, _, _ in log], 95) / 1e3
    r = m["replay"]
    assert r["observed_p95_ms"] == pytest.approx(logged, rel=0.02)
    # the replay at the logged settings predicts what the log shows, within 15%
    assert r["predicted_p95_ms_at_current_settings"] == pytest.approx(logged, rel=0.15)
    rec = m["recommendation"]
    assert rec["predicted_p95_ms"] <= r["predicted_p95_ms_at_current_settings"] * 1.02
    assert rec["max_queue_delay_us"] in (0, 100, 250, 500, 1000, 2000, 5000)
    assert rec["max_batch_size"] >= 8  # one row at a time would be near saturation
    cap = m["capacity"]
    # 300/s fits; the most any setting could serve is B / (a + cB) rows a second
    bound = rec["max_batch_size"] / (A + C * rec["max_batch_size"])
    assert 300 < cap["requests_per_s_within_slo"] <= bound * 1.1
    assert not cap["exceeds"] and "headroom" in cap["verdict"]
    demand = m["demand"]["requests_per_s"]
    assert demand["p50"] == pytest.approx(300, rel=0.1)
    assert demand["peak"] >= demand["p95"] >= demand["p50"]
    assert 0.2 < m["utilisation"]["median"] < 0.9


def test_the_report_says_plainly_when_the_peak_is_more_than_the_slo_allows(
        home: Home, db: Database) -> None:
    log = served_log(rate=300, seconds=60, max_batch=64, seed=3)
    with home.monitoring_db() as mon:
        write(mon, log)
        report = build(mon, db, config(), since=T0, until=T0 + 3600, slo_p95_ms=2.5)
    cap = report["models"][0]["capacity"]
    assert cap["exceeds"]
    assert cap["requests_per_s_within_slo"] < cap["peak_requests_per_s"]
    assert "EXCEEDS" in cap["verdict"] and "%" in cap["verdict"]
    # An SLO below the time of one run can not be met at all.
    with home.monitoring_db() as mon:
        report = build(mon, db, config(), since=T0, until=T0 + 3600, slo_p95_ms=1.0)
    cap = report["models"][0]["capacity"]
    assert cap["exceeds"] and cap["requests_per_s_within_slo"] == 0


def test_too_little_traffic_or_one_run_size_is_not_enough_data(
        home: Home, db: Database) -> None:
    few = [(T0 + i, 2000, 0, 1) for i in range(20)]
    with home.monitoring_db() as mon:
        write(mon, few, model="quiet")
        write(mon, [(T0 + i / 10, 2000, 0, 1) for i in range(500)], model="single")
        report = build(mon, db, config(), since=T0, until=T0 + 3600)
    by = {m["model"]: m for m in report["models"]}
    assert not by["quiet"]["enough"]
    assert any("only 20 answered requests" in x and "capacity.min_requests" in x
               for x in by["quiet"]["missing"])
    assert not by["single"]["enough"]
    (why,) = by["single"]["missing"]
    assert "runs of one size only" in why and "appliance capacity profile single@1" in why
    assert "recommendation" not in by["single"]


def test_a_profile_gives_the_service_time_where_there_is_one(
        home: Home, db: Database, tmp_path) -> None:
    from helpers.promotion import imported_home
    from helpers.serving import mlp

    h = imported_home(tmp_path / "h", {1: mlp()})
    sizes = (1, 4, 16, 64)
    profile = {"kind": "tabular", "device": "cpu", "provider": "CPUExecutionProvider",
               "model_bytes": 300_000, "duration_s": 1.0, "skipped": [],
               "points": [{"batch_size": b, "concurrency": 1, "stable": True, "windows": 3,
                           "run_rows_mean": b, "memory_bytes": 100 * 2**20 + 4096 * b,
                           "service": {"rows": b, "requests": 1,
                                       "period_us": (A + C * b) * 1e6}} for b in sizes]}
    with h.db() as hdb, h.monitoring_db() as mon:
        store.save(hdb, "mlp@1", profile, actor="tester")
        write(mon, [(T0 + i / 10, 2100, 0, 1) for i in range(500)], model="mlp")
        report = build(mon, hdb, config(), since=T0, until=T0 + 3600)
    (m,) = report["models"]
    assert m["enough"] and m["profile_id"] == 1
    assert m["service_time"]["c_us"] == pytest.approx(C * 1e6, rel=0.05)
    assert "profile 1" in m["service_time"]["source"]
    mem = m["memory"]
    assert mem["per_row_bytes"] == pytest.approx(4096, rel=0.01)
    assert mem["reserve_bytes"] == int((mem["base_bytes"] + 4096 * m["recommendation"][
        "max_batch_size"]) * 1.1)


def llm_log(rate: float, seconds: float, tokens: int, step: tuple[float, float],
            seed: int = 0) -> list[dict[str, object]]:
    """Rows of ``llm_requests`` from a server that steps every running sequence together,
    each step taking a + c·n seconds for n sequences."""
    rng = np.random.default_rng(seed)
    arrivals = list(T0 + np.cumsum(rng.exponential(1 / rate, int(rate * seconds))))
    rows, running, now, i = [], [], T0, 0
    while i < len(arrivals) or running:
        if not running and arrivals[i] > now:
            now = arrivals[i]
        while i < len(arrivals) and arrivals[i] <= now:
            running.append({"arrived": arrivals[i], "left": tokens, "first": None})
            i += 1
        now += step[0] + step[1] * len(running)
        for seq in running:
            seq["left"] -= 1
            seq["first"] = seq["first"] or now
        for seq in [s for s in running if s["left"] == 0]:
            e2e = (now - seq["arrived"]) * 1e3
            rows.append({"ts": now, "day": "2023-11-14", "model": "chat", "version": 1,
                         "endpoint": "chat", "status": 200, "stream": 1,
                         "prompt_tokens": 8, "completion_tokens": tokens, "queue_ms": 0.0,
                         "ttft_ms": (seq["first"] - seq["arrived"]) * 1e3, "itl_ms": 1.0,
                         "e2e_ms": e2e, "finish_reason": "length", "device": "cpu",
                         "device_s": 0.0, "cost": 0.0, "currency": ""})
        running = [s for s in running if s["left"] > 0]
    return rows


def test_a_language_model_is_sized_by_its_profile_and_kv_cache(home: Home, tiny_model
                                                                ) -> None:
    from helpers.llm import register

    register(home, tiny_model)
    a, c = 0.001, 0.0005  # a step: 1 ms, and 0.5 ms a sequence
    kv = {"layers": 2, "kv_heads": 2, "head_size": 16, "bytes": 4, "context_length": 128}
    points = [{"streams": n, "prompt_tokens": 8, "answer_tokens": 20, "stable": True,
               "windows": 3, "itl_ms": {"p50": (a + c * n) * 1e3},
               "ttft_ms": {"p50": (a + c * n) * 1e3}} for n in (1, 2, 4, 8)]
    profile = {"kind": "llm", "device": "cpu", "provider": "CPUExecutionProvider",
               "model_bytes": 500_000, "kv": kv, "points": points, "duration_s": 1.0}
    rows = llm_log(rate=40, seconds=120, tokens=20, step=(a, c))
    with home.db() as db, home.monitoring_db() as mon:
        store.save(db, "chat@1", profile, actor="tester")
        insert_rows(mon, "llm_requests", rows)
        report = build(mon, db, config(), since=T0, until=T0 + 3600, slo_p95_ms=50)
    (m,) = report["models"]
    assert m["kind"] == "llm" and m["enough"], m["missing"]
    assert m["service_time"]["a_us"] == pytest.approx(1000, rel=0.01)
    assert m["service_time"]["c_us"] == pytest.approx(500, rel=0.01)
    logged_ttft = np.percentile([r["ttft_ms"] for r in rows], 95)
    assert m["replay"]["predicted_ttft_p95_ms"] == pytest.approx(logged_ttft, rel=0.15)
    logged_e2e = np.percentile([r["e2e_ms"] for r in rows], 95)
    assert m["replay"]["predicted_e2e_p95_ms"] == pytest.approx(logged_e2e, rel=0.15)
    concurrent = m["peak_concurrent_sequences"]
    assert concurrent >= 2
    mem = m["memory"]
    assert mem["kv_cache_bytes"] == kv_cache_bytes(kv, concurrent) == (
        2 * 2 * 2 * 16 * 4 * 128 * concurrent)
    assert mem["reserve_bytes"] == int((500_000 + mem["kv_cache_bytes"]) * 1.1)
    assert m["capacity"]["requests_per_s_within_slo"] > 40
    assert m["capacity"]["slo_applies_to"] == "time to first token"


def test_a_language_model_without_a_profile_is_not_enough_data(home: Home, tiny_model
                                                                ) -> None:
    from helpers.llm import register

    register(home, tiny_model)
    with home.db() as db, home.monitoring_db() as mon:
        insert_rows(mon, "llm_requests", llm_log(rate=5, seconds=60, tokens=5,
                                                 step=(0.001, 0.0005)))
        (m,) = build(mon, db, config(), since=T0, until=T0 + 3600)["models"]
    assert not m["enough"]
    assert any("chat@1 has no capacity profile" in x for x in m["missing"])
    assert m["memory"]["reserve_bytes"] is None


def test_report_cli(runner, home: Home) -> None:
    log = served_log(rate=200, seconds=30, max_batch=64)
    with home.monitoring_db() as mon:
        write(mon, [(ts - T0 + __import__("time").time() - 40, lat, q, b)
                    for ts, lat, q, b in log])
    r = runner("capacity", "report", "--since", "1h", "--slo-p95-ms", "50")
    assert r.exit_code == 0, r.output
    assert "recommend  serving.max_batch_size" in r.output and "headroom" in r.output
    data = json.loads(runner("capacity", "report", "--json").stdout)
    assert data["models"][0]["model"] == "m"
    bad = runner("capacity", "report", "--since", "yesterday")
    assert bad.exit_code == 2 and "--since" in bad.output
    assert runner("capacity", "report", "--slo-p95-ms", "0").exit_code == 2
    assert runner("capacity", "report", "--model", "nope").exit_code == 2


def test_the_verdict_writes_large_rates_whole_not_in_exponent_form() -> None:
    from appliance.capacity.report import _verdict

    sentence, headroom = _verdict(152.4, 21_330.4, "requests/s", 100)
    assert "peak of 152.4 requests/s" in sentence and "about 21,330 requests/s" in sentence
    assert "e+" not in sentence and headroom > 0.99
