"""Capacity profiles measured for real: the engine loads the version as serving does."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers.promotion import imported_home
from helpers.serving import mlp

from appliance.capacity import store
from appliance.config import parse_config
from appliance.jobs.capacity import run_profile_job, validate_profile_params
from appliance.queue.context import JobContext
from appliance.storage.home import Home

QUICK = {"window_s": 0.1, "max_windows": 4}


def run_job(home: Home, tmp_path: Path, params: dict[str, object]) -> dict[str, object]:
    work = tmp_path / "job" / "work"
    work.mkdir(parents=True, exist_ok=True)
    ctx = JobContext(job_id=7, kind="capacity-profile", params=params, attempt=1,
                     workdir=work, home=home.root, config=parse_config({}))
    return run_profile_job(ctx)


def test_a_tabular_profile_sweeps_batch_size_and_concurrency(tmp_path: Path) -> None:
    home = imported_home(tmp_path / "h", {1: mlp()})
    result = run_job(home, tmp_path, {"model": "mlp@1", "batch_sizes": "1,8",
                                      "concurrency": [1, 3], **QUICK})
    assert result["points"] == 4 and result["device"] == "cpu" and result["kind"] == "tabular"
    with home.db() as db:
        profile = store.latest(db, "mlp@1")
        (entry,) = db.execute("SELECT entry FROM audit_log WHERE action = "
                              "'capacity.profile'").fetchall()
    assert profile is not None and profile["id"] == result["profile_id"]
    assert json.loads(entry[0])["details"]["job_id"] == 7
    assert [(p["batch_size"], p["concurrency"]) for p in profile["points"]] == [
        (1, 1), (1, 3), (8, 1), (8, 3)]
    for p in profile["points"]:
        assert p["requests_per_s"] > 0 and 1 <= p["windows"] <= 4
        assert p["rows_per_s"] == pytest.approx(p["requests_per_s"] * p["batch_size"], rel=0.01)
        lat = p["latency_us"]
        assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"]
        assert p["queue_us"]["p50"] <= lat["p50"]
        assert p["run_rows_mean"] >= p["batch_size"]  # merged runs hold whole requests
        assert p["memory_kind"] == "resident" and p["memory_bytes"] > 10 * 2**20
        assert p["activity_kind"] == "cpu" and p["activity_percent"] is not None
        run = p["service"]
        assert run["rows"] == pytest.approx(p["run_rows_mean"], rel=0.01)
        assert run["requests"] == pytest.approx(run["rows"] / p["batch_size"], rel=1e-3)
        # a run's period is the measured time over the runs (on a loaded machine it holds
        # the pauses between requests too, so no bound by latency)
        assert 0 < run["period_us"] <= 1e6 * p["seconds"]
        assert run["period_us"] == pytest.approx(1e6 * run["rows"] / p["rows_per_s"], rel=0.01)
    assert profile["model_bytes"] == len(mlp())
    # concurrent requests of 8 rows are merged into runs of more than 8
    assert profile["points"][3]["run_rows_mean"] > 8


def test_profile_parameters_are_checked_before_the_job_is_queued(runner, home: Home,
                                                                 tmp_path: Path) -> None:
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(mlp())
    assert runner("models", "import", "mlp", str(onnx)).exit_code == 0
    for args, needle in [(["--batch-sizes", "1,x"], "--batch-sizes: 'x' is not a whole"),
                         (["--concurrency", "0"], "--concurrency: '0' must be a whole"),
                         (["--streams", "2,2"], "--streams: 2,2 names a value twice"),
                         (["--window", "100"], "--window: must be from 0.05 to 60")]:
        r = runner("capacity", "profile", "mlp@1", *args)
        assert r.exit_code == 2 and needle in r.output, r.output
        assert r.output.count("\n") == 1
    r = runner("capacity", "profile", "mlp@9")
    assert r.exit_code == 2 and "mlp@9 does not exist" in r.output
    with pytest.raises(Exception, match="unknown parameter 'batch'"):
        validate_profile_params({"model": "mlp@1", "batch": [1]})
    r = runner("jobs", "submit", "capacity-profile", "-p", "model=mlp@1", "-p", "streams=[0]")
    assert r.exit_code == 2 and "streams" in r.output
    r = runner("capacity", "profile", "mlp@1", "--json")
    job = json.loads(r.stdout)
    assert job["kind"] == "capacity-profile" and job["state"] == "queued"
    assert job["params"]["model"] == "mlp@1" and job["gpus"] == 0  # no GPU on this host
    r = runner("capacity", "show", "mlp@1")
    assert r.exit_code == 2 and "has no capacity profile" in r.output
    assert "no capacity profiles yet" in runner("capacity", "list").output


def test_show_and_list_print_a_stored_profile(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from appliance.cli import main

    home = imported_home(tmp_path / "h", {1: mlp()})
    run_job(home, tmp_path, {"model": "mlp@1", "batch_sizes": [2], "concurrency": [2],
                             **QUICK})
    cli = CliRunner()
    r = cli.invoke(main, ["--home", str(home.root), "capacity", "show", "mlp@1"])
    assert r.exit_code == 0, r.output
    assert "capacity profile 1 of mlp@1 (tabular) on cpu" in r.output
    assert "rows/s" in r.output and "RSS" in r.output
    shown = json.loads(cli.invoke(main, ["--home", str(home.root), "capacity", "show", "1",
                                         "--json"]).stdout)
    assert shown["points"][0]["batch_size"] == 2
    listed = json.loads(cli.invoke(main, ["--home", str(home.root), "capacity", "list",
                                          "--json"]).stdout)
    assert [(x["model"], x["version"], x["points"]) for x in listed] == [("mlp", 1, 1)]
    r = cli.invoke(main, ["--home", str(home.root), "capacity", "show", "99"])
    assert r.exit_code != 0 and "no capacity profile 99" in r.output


def test_a_language_model_profile_measures_streams(home: Home, tiny_model: Path,
                                                   tmp_path: Path) -> None:
    from helpers.llm import register

    ref = register(home, tiny_model)
    result = run_job(home, tmp_path, {"model": ref, "streams": [1, 2], "prompt_tokens": [8],
                                      "answer_tokens": [6, 200], "window_s": 0.2,
                                      "max_windows": 4})
    assert result["kind"] == "llm"
    with home.db() as db:
        profile = store.latest(db, ref)
    assert profile is not None
    # an answer of 200 tokens after 8 of prompt is past the context (128): skipped, said
    assert [(p["streams"], p["answer_tokens"]) for p in profile["points"]] == [(1, 6), (2, 6)]
    assert any("past the context" in s for s in profile["skipped"])
    for p in profile["points"]:
        assert p["requests_per_s"] > 0
        assert p["tokens_per_s"] == pytest.approx(p["requests_per_s"] * 6, rel=0.01)
        assert 0 < p["ttft_ms"]["p50"] <= p["e2e_ms"]["p50"]
        assert p["itl_ms"]["p50"] > 0
        assert p["memory_bytes"] > 0  # the model's own process, not this one
    assert profile["kv"] == {"layers": 2, "kv_heads": 2, "head_size": 16, "bytes": 4,
                             "context_length": 128}
