"""The jobs, schedules and gpu commands as a user types them."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from helpers.queue import fast_config
from helpers.serving import mlp

from appliance.queue.jobs import get_job
from appliance.queue.states import JobState
from appliance.storage.home import Home
from appliance.worker import Worker, WorkerSettings


def test_submit_list_show_cancel(runner, db) -> None:
    result = runner("jobs", "submit", "sleep", "-p", "seconds=2", "--priority", "7",
                    "--cpus", "2", "--json")
    assert result.exit_code == 0, result.output
    job = json.loads(result.output)
    assert job["state"] == "queued" and job["params"] == {"seconds": 2}
    assert job["priority"] == 7 and job["cpus"] == 2
    listed = runner("jobs", "list", "--json")
    data = json.loads(listed.output)
    assert [j["id"] for j in data["jobs"]] == [job["id"]]
    assert data["depth"]["states"]["queued"] == 1
    table = runner("jobs", "list")
    assert "sleep" in table.output and "1 queued" in table.output
    shown = runner("jobs", "show", str(job["id"]))
    assert shown.exit_code == 0 and "state: queued" in shown.output
    cancelled = runner("jobs", "cancel", str(job["id"]))
    assert cancelled.exit_code == 0 and "cancelled" in cancelled.output
    assert get_job(db, job["id"]).state is JobState.CANCELLED
    again = runner("jobs", "cancel", str(job["id"]))
    assert again.exit_code == 1 and "already finished" in again.output


@pytest.mark.parametrize("args, message", [
    (["jobs", "submit", "nope"], "unknown job kind"),
    (["jobs", "submit", "noop", "-p", "novalue"], "expected KEY=VALUE"),
    (["jobs", "submit", "noop", "--params", "[1]"], "must be a JSON object"),
    (["jobs", "submit", "sleep", "-p", "seconds=abc"], "params.seconds"),
    (["jobs", "submit", "noop", "--gpu-memory", "100"], "gpus is 0"),
    (["jobs", "show", "999"], "does not exist"),
    (["schedules", "add", "x", "--cron", "* * *", "noop"], "has 3 fields"),
    (["schedules", "pause", "missing"], "does not exist"),
])
def test_bad_input_exits_2_with_one_line(runner, args: list[str], message: str) -> None:
    result = runner(*args)
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_logs_and_follow(runner, home: Home, db) -> None:
    job_id = json.loads(runner("jobs", "submit", "fail", "-p", "message=boom", "--json").output)["id"]
    assert runner("jobs", "logs", str(job_id)).output == ""
    worker = Worker(home, fast_config(), settings=WorkerSettings(poll_s=0.01, cpus_total=2))
    try:
        while not get_job(db, job_id).state.terminal:
            worker.step()
    finally:
        worker.close()
    followed = runner("jobs", "logs", str(job_id), "--follow")
    assert followed.exit_code == 0
    assert "attempt 1 started" in followed.output and "boom" in followed.output
    tail = runner("jobs", "logs", str(job_id), "--tail", "1")
    assert tail.output.count("\n") == 1


def test_submit_wait_exits_1_when_the_job_fails(runner, home: Home) -> None:
    worker = Worker(home, fast_config(), settings=WorkerSettings(poll_s=0.02, cpus_total=2))
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop.is_set,))
    thread.start()
    try:
        failed = runner("jobs", "submit", "fail", "-p", "message=no data", "--wait")
        ok = runner("jobs", "submit", "noop", "--wait", "--json")
    finally:
        stop.set()
        thread.join(timeout=30)
    assert failed.exit_code == 1 and "no data" in failed.output
    assert ok.exit_code == 0 and json.loads(ok.output)["state"] == "succeeded"


def test_schedules_commands(runner) -> None:
    added = runner("schedules", "add", "drift-hourly", "--cron", "0 * * * *", "echo",
                   "-p", "model=churn", "--json")
    assert added.exit_code == 0, added.output
    assert json.loads(added.output)["next_fire_at"].endswith(":00:00.000000Z")
    listed = json.loads(runner("schedules", "list", "--json").output)
    assert listed[0]["template"]["params"] == {"model": "churn"} and listed[0]["enabled"]
    assert runner("schedules", "pause", "drift-hourly").exit_code == 0
    assert "paused" in runner("schedules", "list").output
    assert runner("schedules", "resume", "drift-hourly").exit_code == 0
    assert runner("schedules", "remove", "drift-hourly").exit_code == 0
    assert json.loads(runner("schedules", "list", "--json").output) == []


def test_gpu_command_with_a_simulated_inventory(runner, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    inv = tmp_path / "gpus.json"
    inv.write_text(json.dumps({"gpus": [{"name": "Sim A100", "memory_total_mb": 40960,
                                         "memory_used_mb": 1024}]}))
    cfg = tmp_path / "gpu.yaml"
    cfg.write_text(f"gpu:\n  inventory_file: {inv}\n  reserve_mb: 1024\n")
    monkeypatch.setenv("APPLIANCE_CONFIG", str(cfg))
    runner("jobs", "submit", "noop", "--gpus", "1", "--gpu-memory", "8000")
    result = runner("gpu", "--json")
    assert result.exit_code == 0, result.output
    gpus = json.loads(result.output)["gpus"]
    assert gpus[0]["name"] == "Sim A100" and gpus[0]["free_for_jobs_mb"] == 40960 - 1024 - 1024
    text = runner("gpu").output
    assert "gpu0  Sim A100" in text and "reserve 1024 MiB" in text
    # a capacity profile asks for a whole GPU where there is one
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(mlp())
    assert runner("models", "import", "mlp", str(onnx)).exit_code == 0
    job = json.loads(runner("capacity", "profile", "mlp@1", "--json").output)
    assert (job["gpus"], job["gpu_memory_mb"]) == (1, 0)


def test_gpu_command_without_gpus(runner, tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    inv = tmp_path / "none.json"
    inv.write_text('{"gpus": []}')
    cfg = tmp_path / "gpu.yaml"
    cfg.write_text(f"gpu:\n  inventory_file: {inv}\n")
    monkeypatch.setenv("APPLIANCE_CONFIG", str(cfg))
    data = json.loads(runner("gpu", "--json").output)
    assert data["gpus"] == [] and data["reason"] == "no GPU on this server"
    assert runner("gpu").output.strip() == "no GPU on this server"
