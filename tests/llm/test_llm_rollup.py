"""Roll-ups of the language-model request log: `llm usage`, the prompt usage and the
guardrails' summary give from the per-minute roll-ups (and the rows after them) what they
gave from the raw rows, and still give it once retention has deleted the raw rows; and
what they read of the raw rows is bounded."""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np
import pytest
from helpers.llm_usage import log_llm, row

from appliance.config import parse_config
from appliance.monitoring import guardrail_verdicts, run_retention
from appliance.monitoring.llm_rollup import rollup_llm
from appliance.monitoring.llm_usage import llm_usage, prompt_usage
from appliance.monitoring.rollup import LLM_STATE_KEY, last_rolled_id
from appliance.storage.home import Home

DAY = 86400.0
# Whole minutes, far enough back that every row is past a 30-day retention at NOW + 40 d.
START = (int(time.time() // 60) - 3 * 1440) * 60.0
COUNTS = ("requests", "errors", "prompt_tokens", "completion_tokens", "device", "cost",
          "currency", "costs")


def verdicts(i: int) -> str | None:
    """Every third request unchecked; of the rest some blocked, redacted or flagged."""
    if i % 3 == 0:
        return None
    inp: dict[str, Any] = {"stage": "input", "action": None, "triggered": [], "ms": 0.3}
    out: dict[str, Any] = {"stage": "output", "action": None, "triggered": [], "ms": 0.4}
    if i % 7 == 1:
        inp.update(action="block", triggered=["injection_patterns"], results=[
            {"check": "injection_patterns", "triggered": True, "action": "block",
             "detail": f"request {i}"}])
    elif i % 5 == 2:
        out.update(action="redact", triggered=["secrets", "personal_data"], results=[
            {"check": "secrets", "triggered": True, "action": "redact", "detail": "key"},
            {"check": "personal_data", "triggered": True, "action": "flag", "detail": "email"}])
    return json.dumps([inp, out])


def seed_rows(start: float, n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` requests over a day and a half from ``start``: two models, two versions, two
    prompt versions, two currencies, some errors and requests with no first token."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        ts = start + float(rng.uniform(0, 1.5 * DAY))
        status = 500 if i % 17 == 5 else 400 if i % 23 == 4 else 200
        rows.append(row(
            ts, model="chat" if i % 4 else "coder", version=1 + (i % 6 == 0),
            prompt_ref=("support@1", "support@2", None)[i % 3], status=status,
            prompt_tokens=int(rng.integers(5, 500)), completion_tokens=int(rng.integers(0, 300)),
            ttft_ms=None if i % 11 == 0 else float(rng.lognormal(3.5, 0.6)),
            e2e_ms=float(rng.lognormal(6.0, 0.5)), device_s=float(rng.integers(1, 64)) / 16,
            cost=float(rng.integers(1, 64)) / 1024, currency="USD" if i % 9 == 0 else "EUR",
            guardrail=verdicts(i)))
    return rows


def raw_values(home: Home) -> dict[tuple[str, int], dict[str, list[float]]]:
    """The answered requests' latencies per model version, from the raw rows."""
    mon = home.monitoring_db()
    found: dict[tuple[str, int], dict[str, list[float]]] = {}
    for model, version, ttft, e2e in mon.execute(
            "SELECT model, version, ttft_ms, e2e_ms FROM llm_requests WHERE status < 400"):
        g = found.setdefault((model, version), {"ttft": [], "e2e": []})
        if ttft is not None:
            g["ttft"].append(ttft)
        g["e2e"].append(e2e)
    mon.close()
    return found


def figures(home: Home, since: float, until: float) -> dict[str, Any]:
    mon = home.monitoring_db()
    try:
        usage = llm_usage(mon, since=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(since)),
                          now=until)
        prompts = prompt_usage(mon, since=since)
        guard = guardrail_verdicts.summary(mon, since, until)
    finally:
        mon.close()
    return {"usage": usage, "prompts": prompts, "guard": guard}


def same_counts(rolled: dict[str, Any], raw: dict[str, Any]) -> None:
    for part in ("versions", "days"):
        assert [{k: r[k] for k in (*COUNTS, "model", "version", "day") if k in r}
                for r in rolled["usage"][part]] == [
            {k: r[k] for k in (*COUNTS, "model", "version", "day") if k in r}
            for r in raw["usage"][part]]
        for new, old in zip(rolled["usage"][part], raw["usage"][part], strict=True):
            assert new["device_s"] == pytest.approx(old["device_s"], abs=1e-9)
    assert [{k: r[k] for k in ("ref", *COUNTS)} for r in rolled["prompts"]] == [
        {k: r[k] for k in ("ref", *COUNTS)} for r in raw["prompts"]]
    for key in ("totals", "buckets", "checks", "models", "prompts", "recent"):
        assert rolled["guard"][key] == raw["guard"][key], key


def test_roll_ups_give_the_raw_rows_figures_and_keep_them_after_deletion(home: Home) -> None:
    rows = seed_rows(START, 900, 1)
    log_llm(home, rows)
    until = START + 2 * DAY
    raw = figures(home, START, until)
    assert raw["usage"]["versions"] and raw["guard"]["totals"]["blocked"] > 0
    assert raw["guard"]["checks"] and len(raw["guard"]["recent"]) == 50
    mon = home.monitoring_db()
    report = rollup_llm(mon, chunk_ids=170)  # several passes, minutes split between them
    assert report.llm_rolled_rows == 900 and last_rolled_id(mon, LLM_STATE_KEY) == 900
    mon.close()
    rolled = figures(home, START, until)
    same_counts(rolled, raw)
    # Quantiles: from the sketch, within its 2% of the answered raw rows' ('lower' rank).
    latencies = raw_values(home)
    for v in rolled["usage"]["versions"]:
        for name in ("ttft", "e2e"):
            values = latencies[(v["model"], v["version"])][name]
            for q in (50, 95):
                exact = float(np.quantile(values, q / 100, method="lower"))
                assert v[f"{name}_p{q}_ms"] == pytest.approx(exact, rel=0.021)
    # Rows after the roll-up, one of them in a minute already rolled up: read raw beside it.
    later = seed_rows(START + 60, 40, 2)
    later[0].update(ts=rows[0]["ts"], day=rows[0]["day"])
    log_llm(home, later)
    mixed = figures(home, START, until)
    assert sum(v["requests"] for v in mixed["usage"]["versions"]) == 940
    mon = home.monitoring_db()
    rollup_llm(mon)
    mon.close()
    full = figures(home, START, until)
    same_counts(full, mixed)
    assert full["usage"] == mixed["usage"]  # the same sketch buckets: the same quantiles
    # Retention deletes the rolled-up raw rows (all but the newest); the figures stay.
    config = parse_config({"monitoring": {"retention_days": 30}})
    mon = home.monitoring_db()
    report = run_retention(mon, config, now=until + 40 * DAY)
    assert report.llm_deleted_rows == 939
    assert mon.execute("SELECT COUNT(*) FROM llm_requests").fetchone()[0] == 1
    assert mon.execute("SELECT COUNT(*) FROM guardrail_triggered").fetchone()[0] <= 1
    mon.close()
    after = figures(home, START, until)
    assert after["usage"] == full["usage"] and after["prompts"] == full["prompts"]
    for key in ("totals", "buckets", "checks", "models", "prompts"):
        assert after["guard"][key] == full["guard"][key], key
    # The triggered verdicts' details went with their rows: at most the kept newest one.
    assert len(after["guard"]["recent"]) <= 2


def test_retention_keeps_language_model_rows_within_the_days(home: Home, runner: Any) -> None:
    now = time.time()
    log_llm(home, [row(now - 40 * DAY), row(now - 40 * DAY + 1), row(now - 3600)])
    mon = home.monitoring_db()
    report = run_retention(mon, parse_config({"monitoring": {"retention_days": 30}}), now=now)
    assert (report.llm_rolled_rows, report.llm_deleted_rows) == (3, 2)
    mon.close()
    result = runner("llm", "usage", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["versions"][0]["requests"] == 3
    r = runner("monitoring", "retention", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["llm_rolled_rows"] == 0


def test_retention_zero_keeps_every_language_model_row(home: Home) -> None:
    log_llm(home, [row(time.time() - 400 * DAY), row(time.time())])
    mon = home.monitoring_db()
    report = run_retention(mon, parse_config({"monitoring": {"retention_days": 0}}))
    assert (report.llm_rolled_rows, report.llm_deleted_rows) == (2, 0)
    mon.close()


def test_the_pages_read_no_unbounded_range_of_raw_rows(home: Home) -> None:
    """Once rolled up, what the usage, prompt and guardrail reads take from the raw rows is
    the rows after the high-water mark, by id, and the newest triggered ones by their own
    index with a limit: never a scan or an index range of the log."""
    log_llm(home, seed_rows(START, 300, 3))
    mon = home.monitoring_db()
    rollup_llm(mon)
    mon.close()
    log_llm(home, seed_rows(START + DAY, 10, 4))
    mon = home.monitoring_db()
    statements: list[str] = []
    mon.conn.set_trace_callback(statements.append)
    try:
        llm_usage(mon, model="chat", since="7d")
        llm_usage(mon)
        prompt_usage(mon, since=START)
        prompt_usage(mon, since=START, refs=["support@1"])
        summary = guardrail_verdicts.summary(mon, START, START + 2 * DAY)
    finally:
        mon.conn.set_trace_callback(None)
    assert summary["recent"] and summary["totals"]["checked"] > 0
    raw = [s for s in statements if "FROM llm_requests" in s]
    assert len(raw) == 6
    for sql in raw:
        plan = " | ".join(r[3] for r in mon.execute("EXPLAIN QUERY PLAN " + sql))
        assert "SCAN llm_requests" not in plan, (sql, plan)
        assert ("USING INTEGER PRIMARY KEY (rowid>?)" in plan
                or "USING INTEGER PRIMARY KEY (rowid=?)" in plan), (sql, plan)
        if "guardrail_triggered" in sql:
            assert "LIMIT 50" in sql and "guardrail_triggered_ts" in plan, plan
    mon.close()


def test_retention_runs_on_a_database_without_the_language_model_log(home: Home) -> None:
    mon = home.monitoring_db()
    mon.execute("DROP TABLE llm_requests")
    report = run_retention(mon, parse_config({}))
    assert (report.llm_rolled_rows, report.llm_deleted_rows) == (0, 0)
    mon.close()
