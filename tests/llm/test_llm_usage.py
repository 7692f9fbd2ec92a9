"""`appliance llm usage`: requests, tokens, latency quantiles, device time and cost of the
language models per model version and per day, from rows of the request log."""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np
import pytest
from helpers.llm_usage import day, log_llm, row

from appliance.errors import BadInput
from appliance.monitoring.llm_usage import llm_usage, since_ts
from appliance.storage.home import Home

NOW = time.time()
OLD = NOW - 3 * 86400  # three days back
RECENT_TTFT = [10.0 * i for i in range(1, 11)]
RECENT_E2E = [100.0 + 25.0 * i for i in range(10)]


def seed(home: Home) -> None:
    """chat@1: four requests three days back and eleven in the last hour (one a 500);
    chat@2: three in the last hour; coder@1: two on the CPU, unpriced."""
    rows = [row(OLD + i, ttft_ms=5.0 * (i + 1), e2e_ms=50.0 * (i + 1)) for i in range(4)]
    rows += [row(NOW - 60 - i, ttft_ms=t, e2e_ms=e, prompt_tokens=10 + i, completion_tokens=20)
             for i, (t, e) in enumerate(zip(RECENT_TTFT, RECENT_E2E, strict=True))]
    rows.append(row(NOW - 30, status=500, ttft_ms=None, e2e_ms=9999.0, completion_tokens=0,
                    error="boom", finish_reason=None))
    rows += [row(NOW - 50 - i, version=2, device_s=1.0, cost=0.5) for i in range(3)]
    rows += [row(NOW - 40 - i, model="coder", device="cpu", device_s=2.0, cost=0.0,
                 currency="") for i in range(2)]
    log_llm(home, rows)


def by_version(report: dict[str, Any], model: str, version: int) -> dict[str, Any]:
    found = [v for v in report["versions"] if (v["model"], v["version"]) == (model, version)]
    assert len(found) == 1, report["versions"]
    return found[0]


def usage_json(runner: Any, *args: str) -> dict[str, Any]:
    result = runner("llm", "usage", "--json", *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_totals_and_quantiles_per_model_version(home: Home, runner: Any) -> None:
    seed(home)
    report = usage_json(runner)
    assert [(v["model"], v["version"]) for v in report["versions"]] == [
        ("chat", 1), ("chat", 2), ("coder", 1)]
    chat = by_version(report, "chat", 1)
    assert chat["requests"] == 15 and chat["errors"] == 1
    assert chat["prompt_tokens"] == 4 * 5 + sum(10 + i for i in range(10)) + 5
    assert chat["completion_tokens"] == 4 * 7 + 10 * 20 + 0
    ttft = [5.0, 10.0, 15.0, 20.0, *RECENT_TTFT]  # the 500 has no first token
    e2e = [50.0, 100.0, 150.0, 200.0, *RECENT_E2E]  # nor counts in the latencies
    assert chat["ttft_p50_ms"] == pytest.approx(np.percentile(ttft, 50), abs=1e-3)
    assert chat["ttft_p95_ms"] == pytest.approx(np.percentile(ttft, 95), abs=1e-3)
    assert chat["e2e_p50_ms"] == pytest.approx(np.percentile(e2e, 50), abs=1e-3)
    assert chat["e2e_p95_ms"] == pytest.approx(np.percentile(e2e, 95), abs=1e-3)
    assert chat["device_s"] == pytest.approx(15 * 0.5)
    assert chat["cost"] == pytest.approx(15 * 0.25) and chat["currency"] == "EUR"
    assert chat["device"] == "cuda"
    coder = by_version(report, "coder", 1)
    assert coder["device"] == "cpu" and coder["device_s"] == pytest.approx(4.0)
    assert coder["cost"] == 0 and coder["currency"] == ""
    assert report["note"] is None and report["since"] is None


def test_rows_per_day(home: Home, runner: Any) -> None:
    seed(home)
    days = usage_json(runner, "--model", "chat")["days"]
    chat1 = [d for d in days if d["version"] == 1]
    assert [d["day"] for d in chat1][0] == day(OLD)
    old = chat1[0]
    assert old["requests"] == 4 and old["errors"] == 0
    assert old["ttft_p50_ms"] == pytest.approx(12.5) and old["e2e_p95_ms"] == pytest.approx(
        np.percentile([50.0, 100.0, 150.0, 200.0], 95))
    assert sum(d["requests"] for d in chat1) == 15  # the recent hour may span midnight
    assert {d["model"] for d in days} == {"chat"}


def test_since_and_model_filters(home: Home, runner: Any) -> None:
    seed(home)
    report = usage_json(runner, "--since", "24h", "--model", "chat")
    assert [(v["model"], v["version"], v["requests"]) for v in report["versions"]] == [
        ("chat", 1, 11), ("chat", 2, 3)]
    assert report["model"] == "chat" and report["since"].endswith("Z")
    assert day(OLD) not in {d["day"] for d in report["days"]}
    iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(OLD - 60))
    assert by_version(usage_json(runner, "--since", iso), "chat", 1)["requests"] == 15
    assert usage_json(runner, "--since", "2d")["versions"][0]["requests"] == 11


def test_the_human_output_has_a_table_per_version(home: Home, runner: Any) -> None:
    seed(home)
    result = runner("llm", "usage")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "chat@1 on cuda"
    assert "ttft p50 ms" in lines[1] and "GPU-s" in lines[1] and "cost EUR" in lines[1]
    total = lines[2].split()
    assert total[:3] == ["total", "15", "1"] and total[-1] == "3.75"
    assert lines[3].startswith(day(OLD)) and lines[3].split()[1] == "4"
    assert "coder@1 on cpu" in lines and any("CPU-s" in line for line in lines)
    assert "chat@2 on cuda" in lines


@pytest.mark.parametrize("since", ["yesterday", "-3d", "0h", "2099-01-01"])
def test_a_bad_since_exits_2_naming_the_option(home: Home, runner: Any, since: str) -> None:
    result = runner("llm", "usage", "--since", since)
    assert result.exit_code == 2
    assert "--since" in result.output and "Traceback" not in result.output


def test_an_unknown_model_exits_2(home: Home, runner: Any) -> None:
    seed(home)
    result = runner("llm", "usage", "--model", "nope")
    assert result.exit_code == 2
    assert "model nope does not exist" in result.output


def test_nothing_served_says_so(home: Home, runner: Any) -> None:
    result = runner("llm", "usage")
    assert result.exit_code == 0 and "no language-model requests" in result.output
    assert usage_json(runner)["versions"] == []


def test_an_older_data_directory_without_the_table(home: Home, runner: Any) -> None:
    mon = home.monitoring_db()
    try:
        mon.execute("DROP TABLE llm_requests")
        assert llm_usage(mon)["note"].startswith("no language-model requests")
    finally:
        mon.close()
    result = runner("llm", "usage", "--since", "7d")
    assert result.exit_code == 0 and "no language-model requests" in result.output


def test_since_accepts_durations_and_iso_times() -> None:
    now = 1_800_000_000.0
    assert since_ts("24h", now) == now - 86400
    assert since_ts("90m", now) == now - 5400
    assert since_ts("2w", now) == now - 14 * 86400
    assert since_ts("2026-01-31", now) == 1_769_817_600.0
    assert since_ts("2026-01-31T01:00:00+01:00", now) == 1_769_817_600.0
    with pytest.raises(BadInput, match="--since"):
        since_ts("soon", now)


def test_usage_per_prompt_version_reads_the_prompt_index(home: Home) -> None:
    from appliance.monitoring.llm_usage import prompt_usage

    log_llm(home, [row(NOW - 60, prompt_ref="capital@2", e2e_ms=100.0),
                   row(NOW - 70, prompt_ref="capital@10", e2e_ms=200.0),
                   row(NOW - 80, prompt_ref="capital@2", status=500, ttft_ms=None),
                   row(OLD, prompt_ref="capital@2"), row(NOW - 90)])
    mdb = home.monitoring_db()
    try:
        every = prompt_usage(mdb, since=NOW - 86400)
        assert [(u["ref"], u["requests"], u["errors"]) for u in every] == [
            ("capital@2", 2, 1), ("capital@10", 1, 0)]  # in version order, not text order
        assert every[0]["prompt"] == "capital" and every[0]["version"] == 2
        assert every[0]["e2e_p95_ms"] == 100.0 and every[0]["cost"] == 0.5
        named = prompt_usage(mdb, since=NOW - 86400, refs=["capital@10", "other@1"])
        assert [u["ref"] for u in named] == ["capital@10"]
        assert prompt_usage(mdb, since=NOW - 86400, refs=[]) == []
        plan = " ".join(str(r) for r in mdb.execute(
            "EXPLAIN QUERY PLAN SELECT status FROM llm_requests"
            " WHERE prompt_ref IN (?, ?) AND ts >= ?", ["a@1", "a@2", 0.0]))
        assert "llm_requests_prompt_ts" in plan
    finally:
        mdb.close()
