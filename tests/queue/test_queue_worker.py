"""A worker driven step by step in this process, running real child processes."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator

import pytest
from helpers.queue import alive, fast_config, gpu, submit, wait_for

from appliance.gpu.inventory import StaticSource
from appliance.gpu.placement import ResourceRequest
from appliance.queue.jobs import JobSpec, cancel_job, get_job, read_log, tail_log
from appliance.queue.states import JobState
from appliance.storage.db import Database
from appliance.storage.home import Home
from appliance.worker import Worker, WorkerSettings

SETTINGS = WorkerSettings(lease_s=5, poll_s=0.02, max_jobs=2, shutdown_grace_s=0.5,
                          kill_grace_s=0.5, cpus_total=8)


@pytest.fixture
def worker(home: Home) -> Iterator[Worker]:
    w = Worker(home, fast_config(), settings=SETTINGS,
               inventory=StaticSource([gpu(0, 16000), gpu(1, 16000)]))
    yield w
    for run in w.running.values():
        run.handle.kill()
        wait_for(lambda r=run: r.handle.poll() is not None, timeout=10)
    w.close()


def run_until(worker: Worker, db: Database, job_id: int,
              timeout: float = 30.0) -> None:
    def done() -> bool:
        worker.step()
        return get_job(db, job_id).state.terminal

    wait_for(done, timeout=timeout, every=0.02)


def test_a_job_runs_in_its_own_directory_and_process_group(
    worker: Worker, db: Database, home: Home,
) -> None:
    job_id = submit(db, JobSpec("noop"), fast_config(), actor="t")
    run_until(worker, db, job_id)
    job = get_job(db, job_id)
    assert job.state is JobState.SUCCEEDED, job.error
    assert job.result["cwd"] == str(home.job_dir(job_id) / "work")
    assert job.result["pgid"] == job.result["pid"]  # a group of its own
    assert job.result["cuda_visible_devices"] == ""
    assert job.pid == job.result["pid"]
    assert f"job {job_id} (noop) attempt 1 started" in tail_log(home, job_id)


def test_the_child_sees_only_the_gpus_it_was_placed_on(
    worker: Worker, db: Database,
) -> None:
    config = fast_config()
    first = submit(db, JobSpec("sleep", {"seconds": 1.5},
                               request=ResourceRequest(gpus=1, gpu_memory_mb=12000)),
                   config, actor="t")
    second = submit(db, JobSpec("noop", request=ResourceRequest(gpus=1, gpu_memory_mb=12000)),
                    config, actor="t")
    run_until(worker, db, second)
    a, b = get_job(db, first), get_job(db, second)
    assert a.gpu_indices != b.gpu_indices  # 12000 + 12000 MiB do not fit on one 16000 MiB GPU
    assert b.result["cuda_visible_devices"] == str(b.gpu_indices[0])


def test_a_failing_job_fails_with_its_message_and_is_not_retried(
    worker: Worker, db: Database, home: Home,
) -> None:
    job_id = submit(db, JobSpec("fail", {"message": "bad data in column x"}), fast_config(),
                    actor="t")
    run_until(worker, db, job_id)
    job = get_job(db, job_id)
    assert job.state is JobState.FAILED and job.attempts == 1
    assert "bad data in column x" in (job.error or "")
    assert "Traceback" in tail_log(home, job_id)


def test_timeout_stops_the_job_and_fails_it(worker: Worker, db: Database) -> None:
    job_id = submit(db, JobSpec("sleep", {"seconds": 30}, timeout_s=0.5), fast_config(),
                    actor="t")
    started = time.monotonic()
    run_until(worker, db, job_id)
    job = get_job(db, job_id)
    assert job.state is JobState.FAILED and job.error == "timed out after 0.5s"
    assert time.monotonic() - started < 10
    assert not alive(job.pid)


def test_cancel_kills_the_whole_process_group(
    worker: Worker, db: Database, home: Home,
) -> None:
    # A stubborn job ignores SIGTERM, and so do its two child processes: only the
    # SIGKILL to the whole process group can stop them.
    job_id = submit(db, JobSpec("sleep", {"seconds": 60, "children": 2, "stubborn": True}),
                    fast_config(), actor="t")

    def children() -> list[int]:
        worker.step()
        m = re.search(r"children \[(\d+), (\d+)\]", read_log(home, job_id)[0])
        return [int(m.group(1)), int(m.group(2))] if m else []

    kids = wait_for(children)
    leader = get_job(db, job_id).pid
    assert all(alive(p) for p in [leader, *kids])
    cancel_job(db, job_id, actor="local:ops")
    worker._last_beat = 0  # renew now rather than at the next heartbeat
    run_until(worker, db, job_id)
    job = get_job(db, job_id)
    assert job.state is JobState.CANCELLED
    wait_for(lambda: not any(alive(p) for p in [leader, *kids]), timeout=5)


def test_shutdown_hands_running_jobs_back_within_the_grace(
    home: Home, db: Database,
) -> None:
    job_id = submit(db, JobSpec("sleep", {"seconds": 60}), fast_config(), actor="t")
    w = Worker(home, fast_config(), settings=SETTINGS, inventory=StaticSource([]))
    stop = threading.Event()
    t = threading.Thread(target=w.run, args=(stop.is_set,))
    t.start()
    wait_for(lambda: get_job(db, job_id).pid)
    started = time.monotonic()
    stop.set()
    t.join(timeout=15)
    assert not t.is_alive()
    assert time.monotonic() - started < SETTINGS.shutdown_grace_s + SETTINGS.kill_grace_s + 3
    job = get_job(db, job_id)
    assert job.state is JobState.QUEUED and job.attempts == 0
    assert "handed back" in (job.error or "")
    assert db.execute("SELECT COUNT(*) FROM heartbeats WHERE service = 'worker'").fetchone()[0] == 0


def test_worker_records_its_heartbeat(worker: Worker, db: Database) -> None:
    worker.step()
    rows = list(db.query("SELECT * FROM heartbeats WHERE service = 'worker'"))
    assert len(rows) == 1 and worker.id in rows[0]["details"]


def test_a_job_whose_kind_is_gone_fails_instead_of_crashing_the_worker(
    worker: Worker, db: Database, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from appliance.jobs import KINDS

    job_id = submit(db, JobSpec("echo"), fast_config(), actor="t")
    monkeypatch.delitem(KINDS, "echo")
    run_until(worker, db, job_id)
    job = get_job(db, job_id)
    assert job.state is JobState.FAILED and "could not start: unknown job kind" in (job.error or "")


def test_a_job_killed_by_a_nameless_signal_fails_and_the_worker_goes_on(
    worker: Worker, db: Database,
) -> None:
    import os
    import signal

    job_id = submit(db, JobSpec("sleep", {"seconds": 60}), fast_config(), actor="t")

    def started() -> int | None:
        worker.step()
        return get_job(db, job_id).pid

    pid = wait_for(started)
    os.kill(pid, signal.SIGRTMIN + 6)  # a real-time signal: not a member of signal.Signals
    run_until(worker, db, job_id)
    job = get_job(db, job_id)
    assert job.state is JobState.FAILED and job.error == f"killed by signal {signal.SIGRTMIN + 6}"
    after = submit(db, JobSpec("noop"), fast_config(), actor="t")
    run_until(worker, db, after)
    assert get_job(db, after).state is JobState.SUCCEEDED
