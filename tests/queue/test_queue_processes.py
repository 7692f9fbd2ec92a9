"""Worker daemons as real processes: contention, SIGKILL, SIGTERM."""

from __future__ import annotations

import collections
import re
import signal
import time
from pathlib import Path

from helpers.queue import alive, daemon, fast_config, stop, submit, wait_for, write_config

from appliance.queue.jobs import JobSpec, get_job, list_jobs, read_log
from appliance.queue.states import JobState
from appliance.storage.db import Database
from appliance.storage.home import Home


def test_many_jobs_on_several_workers_each_run_exactly_once(
    home: Home, db: Database, tmp_path: Path,
) -> None:
    config = fast_config()
    cfg = write_config(tmp_path / "fast.yaml", config)
    mark = tmp_path / "runs.txt"
    ids = [submit(db, JobSpec("noop", {"mark": str(mark)}), config, actor="t") for _ in range(24)]
    workers = [daemon(home.root, cfg, "worker", "--max-jobs", "2") for _ in range(3)]
    try:
        wait_for(lambda: all(get_job(db, i).state.terminal for i in ids), timeout=120, every=0.2)
    finally:
        for w in workers:
            stop(w)
    assert all(w.returncode == 0 for w in workers)
    jobs = [get_job(db, i) for i in ids]
    assert {j.state for j in jobs} == {JobState.SUCCEEDED}
    assert all(j.attempts == 1 for j in jobs)
    runs = collections.Counter(int(line.split()[0]) for line in mark.read_text().splitlines())
    assert runs == collections.Counter({i: 1 for i in ids})
    started = collections.Counter(
        r["target"] for r in db.query("SELECT target FROM audit_log WHERE action = 'job.started'"))
    assert set(started.values()) == {1} and len(started) == len(ids)
    assert len({j.lease_owner for j in jobs}) == 1  # cleared on completion
    owners = {r["actor"] for r in db.query(
        "SELECT actor FROM audit_log WHERE action = 'job.succeeded'")}
    assert len(owners) >= 2, "the work should be spread over several workers"


def test_sigkilled_worker_job_reruns_after_the_lease_and_succeeds(
    home: Home, db: Database, tmp_path: Path,
) -> None:
    config = fast_config()
    cfg = write_config(tmp_path / "fast.yaml", config)
    mark = tmp_path / "runs.txt"
    job_id = submit(db, JobSpec("sleep", {"seconds": 2, "mark": str(mark), "children": 1}),
                    config, actor="t")
    first = daemon(home.root, cfg, "worker")
    try:
        wait_for(lambda: mark.exists() and get_job(db, job_id).pid, timeout=30)
        orphan = get_job(db, job_id).pid
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    finally:
        stop(first)
    killed_at = time.monotonic()
    # The attempt's process dies with its worker, so it never runs beside its retry;
    # what it started itself is killed when the lease is taken back.
    grandchild = int(re.search(r"children \[(\d+)\]", read_log(home, job_id)[0]).group(1))
    wait_for(lambda: not alive(orphan), timeout=5)
    assert get_job(db, job_id).state is JobState.RUNNING  # until the lease runs out
    second = daemon(home.root, cfg, "worker")
    try:
        wait_for(lambda: get_job(db, job_id).state.terminal, timeout=30, every=0.1)
    finally:
        stop(second)
    job = get_job(db, job_id)
    assert job.state is JobState.SUCCEEDED and job.attempts == 2
    assert time.monotonic() - killed_at >= config["queue.lease_s"] - 0.1
    assert len(mark.read_text().splitlines()) == 2
    actions = [r["action"] for r in db.query(
        "SELECT action FROM audit_log WHERE target = ? ORDER BY seq", [f"job:{job_id}"])]
    assert actions == ["job.submitted", "job.started", "job.requeued", "job.started",
                       "job.succeeded"]
    requeue = db.execute("SELECT entry FROM audit_log WHERE action = 'job.requeued'").fetchone()[0]
    assert b"lease expired" in requeue
    assert len(list_jobs(db)) == 1
    assert not alive(grandchild)


def test_sigterm_hands_back_and_exits_in_bounded_time(
    home: Home, db: Database, tmp_path: Path,
) -> None:
    config = fast_config()
    cfg = write_config(tmp_path / "fast.yaml", config)
    job_id = submit(db, JobSpec("sleep", {"seconds": 60, "stubborn": True}), config, actor="t")
    proc = daemon(home.root, cfg, "worker")
    try:
        wait_for(lambda: get_job(db, job_id).pid, timeout=30)
        wait_for(lambda: db.execute(
            "SELECT COUNT(*) FROM heartbeats WHERE service = 'worker'").fetchone()[0])
        pid = get_job(db, job_id).pid
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
        elapsed = time.monotonic() - t0
    finally:
        stop(proc)
    assert proc.returncode == 0
    bound = config["worker.shutdown_grace_s"] + config["worker.kill_grace_s"]
    assert elapsed < bound + 5
    job = get_job(db, job_id)
    assert job.state is JobState.QUEUED and job.attempts == 0
    assert not alive(pid)
    assert db.execute("SELECT COUNT(*) FROM heartbeats WHERE service = 'worker'").fetchone()[0] == 0


def test_jobs_run_with_the_configuration_the_worker_was_started_with(
    home: Home, db: Database, tmp_path: Path,
) -> None:
    """`appliance --config X worker`: the job uses X, not APPLIANCE_CONFIG or the default."""
    from helpers.monitoring import features, log_requests, train_served_model

    mv = train_served_model(home, tmp_path)
    log_requests(home, mv, features(60, 3), start=time.time() - 120, prefix="w")
    site = write_config(tmp_path / "site.yaml", fast_config(monitoring__window_minutes=7))
    elsewhere = write_config(tmp_path / "elsewhere.yaml", fast_config())  # what env names
    job_id = submit(db, JobSpec("drift-check", {"model": "buyer"}), fast_config(), actor="t")
    proc = daemon(home.root, elsewhere, "--config", str(site), "worker")
    try:
        wait_for(lambda: get_job(db, job_id).state in (JobState.SUCCEEDED, JobState.FAILED),
                 timeout=120)
    finally:
        stop(proc)
    job = get_job(db, job_id)
    assert job.state is JobState.SUCCEEDED, read_log(home, job_id)
    with home.monitoring_db() as mon:
        start, end = mon.execute("SELECT window_start, window_end FROM checks").fetchone()
    assert round(end - start) == 7 * 60  # the site file's window; the default is 60 minutes
