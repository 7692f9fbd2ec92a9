"""The Ray executor against a stand-in Ray Jobs API on loopback that runs the real child."""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers.fake_ray import FakeRay
from helpers.queue import daemon, fast_config, gpu, stop, submit, wait_for, write_config

from appliance.config import Config
from appliance.errors import ConfigError, OperationFailed
from appliance.gpu.inventory import StaticSource
from appliance.gpu.placement import ResourceRequest
from appliance.queue.jobs import JobSpec, cancel_job, get_job, read_log
from appliance.queue.states import JobState
from appliance.storage.db import Database
from appliance.storage.home import Home
from appliance.worker import Worker, WorkerSettings
from appliance.worker.ray_jobs import CHECK_DIR, STATE_FILE, RayExecutor, RaySettings

SETTINGS = WorkerSettings(lease_s=5, poll_s=0.02, max_jobs=2, shutdown_grace_s=0.5,
                          kill_grace_s=0.5, cpus_total=8)


@pytest.fixture
def ray() -> Iterator[FakeRay]:
    fake = FakeRay()
    yield fake
    fake.close()


def ray_config(ray: FakeRay, **extra: Any) -> Config:
    return fast_config(**{"worker__executor": "ray", "worker__ray.address": ray.address,
                          "worker__ray.poll_s": 0.05, "worker__ray.python": sys.executable,
                          **extra})


def make_worker(home: Home, config: Config) -> Worker:
    return Worker(home, config, settings=SETTINGS,
                  inventory=StaticSource([gpu(0, 16000), gpu(1, 16000)]))


@pytest.fixture
def worker(home: Home, ray: FakeRay) -> Iterator[Worker]:
    w = make_worker(home, ray_config(ray))
    yield w
    w.close()


def run_until(worker: Worker, db: Database, job_id: int,
              timeout: float = 60.0) -> None:
    def done() -> bool:
        worker.step()
        return get_job(db, job_id).state.terminal

    wait_for(done, timeout=timeout, every=0.02)


def running_on_ray(ray: FakeRay, sid: str) -> bool:
    job = ray.jobs.get(sid)
    return job is not None and job.status() == "RUNNING"


def test_a_job_runs_on_ray_with_its_spec_resources_and_log(
    worker: Worker, ray: FakeRay, db: Database, home: Home, tmp_path: Path,
) -> None:
    mark = tmp_path / "mark"
    job_id = submit(db, JobSpec("sleep", {"seconds": 0.2, "mark": str(mark)},
                                request=ResourceRequest(gpus=1, gpu_memory_mb=1000, cpus=2)),
                    ray_config(ray), actor="t")
    run_until(worker, db, job_id)
    job = get_job(db, job_id)
    assert job.state is JobState.SUCCEEDED, job.error
    assert len(mark.read_text().splitlines()) == 1
    [body] = ray.submits
    sid = f"appliance-job-{job_id}-attempt-1"
    assert body["submission_id"] == sid
    assert body["entrypoint_num_cpus"] == 2 and body["entrypoint_num_gpus"] == 1
    assert "-m appliance.queue.child" in body["entrypoint"]
    assert str(home.job_dir(job_id)) in body["entrypoint"]
    assert body["runtime_env"]["env_vars"]["APPLIANCE_JOB_ID"] == str(job_id)
    assert body["metadata"]["appliance_job_id"] == str(job_id)
    # The child got the worker's configuration the way the local executor gives it.
    spec = json.loads((home.job_dir(job_id) / "job.json").read_text())
    assert spec["config"] == worker.config.to_json()
    assert spec["home"] == str(home.root)
    assert spec["gpus"] == [0]  # Ray's CUDA_VISIBLE_DEVICES numbering, not this server's
    log, _ = read_log(home, job_id)
    assert "submitted" in log and sid in log
    assert "sleeping 0.2s" in log  # the child's own output, fetched from Ray's log
    assert log.count("sleeping 0.2s") == 1


def test_a_failing_job_fails_with_the_handlers_message(
    worker: Worker, ray: FakeRay, db: Database,
) -> None:
    job_id = submit(db, JobSpec("fail", {"message": "bad data in column x"}), ray_config(ray),
                    actor="t")
    run_until(worker, db, job_id)
    job = get_job(db, job_id)
    assert job.state is JobState.FAILED
    assert "bad data in column x" in (job.error or "")
    assert ray.jobs[f"appliance-job-{job_id}-attempt-1"].status() == "FAILED"


def test_an_entrypoint_that_can_not_start_fails_with_rays_message(
    home: Home, ray: FakeRay, db: Database,
) -> None:
    config = ray_config(ray, **{"worker__ray.python": "/nonexistent/python3"})
    w = make_worker(home, config)
    try:
        job_id = submit(db, JobSpec("noop"), config, actor="t")
        run_until(w, db, job_id)
    finally:
        w.close()
    job = get_job(db, job_id)
    assert job.state is JobState.FAILED
    assert "the Ray job failed" in (job.error or "") and "exit code 127" in (job.error or "")


def test_success_without_a_result_in_the_shared_directory_is_a_failure(
    home: Home, ray: FakeRay, db: Database,
) -> None:
    config = ray_config(ray, **{"worker__ray.python": "true"})  # exits 0, writes nothing
    w = make_worker(home, config)
    try:
        job_id = submit(db, JobSpec("noop"), config, actor="t")
        run_until(w, db, job_id)
    finally:
        w.close()
    job = get_job(db, job_id)
    assert job.state is JobState.FAILED
    assert "result.json is not there" in (job.error or "")
    assert "worker.ray.home" in (job.error or "")


def test_cancel_stops_the_ray_job(
    worker: Worker, ray: FakeRay, db: Database,
) -> None:
    job_id = submit(db, JobSpec("sleep", {"seconds": 120}), ray_config(ray), actor="t")
    sid = f"appliance-job-{job_id}-attempt-1"

    def started() -> bool:
        worker.step()
        return running_on_ray(ray, sid)

    wait_for(started, timeout=30, every=0.02)
    cancel_job(db, job_id, actor="t")
    run_until(worker, db, job_id)
    assert get_job(db, job_id).state is JobState.CANCELLED
    assert f"POST /api/jobs/{sid}/stop" in ray.requests
    assert ray.jobs[sid].status() == "STOPPED"


def test_a_submit_whose_answer_was_lost_is_retried_and_ray_refuses_the_duplicate(
    worker: Worker, ray: FakeRay, db: Database, tmp_path: Path,
) -> None:
    mark = tmp_path / "mark"
    ray.drop_next_submit_answer = True
    job_id = submit(db, JobSpec("sleep", {"seconds": 0.2, "mark": str(mark)}),
                    ray_config(ray), actor="t")
    run_until(worker, db, job_id)
    assert get_job(db, job_id).state is JobState.SUCCEEDED
    sid = f"appliance-job-{job_id}-attempt-1"
    assert [b["submission_id"] for b in ray.submits] == [sid, sid]  # sent twice
    assert list(ray.jobs) == [sid]  # made once
    assert len(mark.read_text().splitlines()) == 1  # ran once


def test_a_lost_connection_keeps_the_job_and_it_ends_when_ray_answers_again(
    worker: Worker, ray: FakeRay, db: Database,
) -> None:
    job_id = submit(db, JobSpec("sleep", {"seconds": 1.0}), ray_config(ray), actor="t")
    sid = f"appliance-job-{job_id}-attempt-1"

    def started() -> bool:
        worker.step()
        return running_on_ray(ray, sid)

    wait_for(started, timeout=30, every=0.02)
    ray.down()
    try:
        def ended_on_ray() -> bool:
            worker.step()
            return ray.jobs[sid].proc.poll() is not None

        wait_for(ended_on_ray, timeout=60, every=0.02)
        for _ in range(5):
            worker.step()
        assert get_job(db, job_id).state is JobState.RUNNING  # kept while Ray was silent
    finally:
        ray.up()
    run_until(worker, db, job_id)
    assert get_job(db, job_id).state is JobState.SUCCEEDED


def test_a_cluster_silent_for_longer_than_lost_after_s_fails_the_job(
    home: Home, ray: FakeRay, db: Database,
) -> None:
    config = ray_config(ray, **{"worker__ray.lost_after_s": 1.0,
                                "worker__ray.request_timeout_s": 1.0})
    w = make_worker(home, config)
    try:
        job_id = submit(db, JobSpec("sleep", {"seconds": 120}), config, actor="t")
        sid = f"appliance-job-{job_id}-attempt-1"

        def started() -> bool:
            w.step()
            return running_on_ray(ray, sid)

        wait_for(started, timeout=30, every=0.02)
        ray.down()
        run_until(w, db, job_id)
        job = get_job(db, job_id)
        assert job.state is JobState.FAILED
        assert "lost contact with the Ray cluster" in (job.error or "")
        assert "worker.ray.lost_after_s" in (job.error or "")
        # The Ray job ran on without anyone to follow it: once the head answers again, the
        # worker stops it and forgets it.
        assert w.executor.orphans()[0]["submission_id"] == sid
        ray.up()
        assert running_on_ray(ray, sid)

        def stopped() -> bool:
            w.step()
            return ray.jobs[sid].status() == "STOPPED" and not w.executor.orphans()

        wait_for(stopped, timeout=30, every=0.05)
    finally:
        w.close()


@pytest.mark.slow
def test_a_worker_killed_mid_job_re_attaches_and_the_job_runs_once(
    home: Home, ray: FakeRay, db: Database, tmp_path: Path,
) -> None:
    config = ray_config(ray)
    cfg = write_config(tmp_path / "ray.yaml", config)
    mark = tmp_path / "mark"
    job_id = submit(db, JobSpec("sleep", {"seconds": 4, "mark": str(mark)}), config, actor="t")
    sid = f"appliance-job-{job_id}-attempt-1"
    first = daemon(home.root, cfg, "worker")
    try:
        wait_for(lambda: running_on_ray(ray, sid), timeout=60, every=0.05)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    finally:
        stop(first)
    assert running_on_ray(ray, sid)  # the Ray job outlives the worker that submitted it
    second = daemon(home.root, cfg, "worker")
    try:
        wait_for(lambda: get_job(db, job_id).state.terminal, timeout=60, every=0.1)
    finally:
        stop(second)
    job = get_job(db, job_id)
    assert job.state is JobState.SUCCEEDED, job.error
    assert job.attempts == 2
    assert len(mark.read_text().splitlines()) == 1  # the work ran once
    assert [s for s in ray.jobs if "-job-" in s] == [sid]  # and was submitted once
    log, _ = read_log(home, job_id)
    assert "re-attached" in log and log.count("sleeping 4") == 1
    assert json.loads((home.job_dir(job_id) / STATE_FILE).read_text())["submission_id"] == sid


def test_the_start_check_passes_when_the_cluster_shares_the_data_directory(
    home: Home, ray: FakeRay,
) -> None:
    executor = RayExecutor(RaySettings(address=ray.address, python=sys.executable), home.root)
    executor.check()
    [body] = ray.submits
    assert "appliance.worker.probe" in body["entrypoint"]
    assert list((home.jobs_dir / CHECK_DIR).iterdir()) == []  # cleaned up


def test_the_start_check_names_the_mount_when_the_cluster_does_not_see_it(
    home: Home, ray: FakeRay,
) -> None:
    executor = RayExecutor(RaySettings(address=ray.address, home="/nonexistent/appliance",
                                       python=sys.executable),
                           home.root)
    with pytest.raises(OperationFailed) as err:
        executor.check()
    message = str(err.value)
    assert "/nonexistent/appliance" in message and "worker.ray.home" in message
    assert "mount" in message


def test_the_start_check_says_when_no_ray_answers(home: Home, ray: FakeRay) -> None:
    ray.down()
    executor = RayExecutor(RaySettings(address=ray.address, request_timeout_s=2), home.root)
    with pytest.raises(OperationFailed, match="worker.ray.address: no Ray dashboard answers"):
        executor.check()


def test_bad_ray_settings_are_refused_naming_the_field(home: Home) -> None:
    with pytest.raises(ConfigError, match="worker.ray.address is empty"):
        RayExecutor(RaySettings(address=""), home.root)
    with pytest.raises(ConfigError, match="worker.ray.address"):
        RayExecutor(RaySettings(address="ray-head:8265"), home.root)
    with pytest.raises(ConfigError, match="worker.ray.home"):
        RayExecutor(RaySettings(address="http://127.0.0.1:8265", home="relative/dir"),
                    home.root)


def test_the_worker_command_refuses_to_start_when_the_check_fails(
    home: Home, ray: FakeRay, tmp_path: Path,
) -> None:
    cfg = write_config(tmp_path / "ray.yaml",
                       ray_config(ray, **{"worker__ray.home": "/nonexistent/appliance"}))
    proc = daemon(home.root, cfg, "worker")
    try:
        proc.wait(timeout=60)
    finally:
        out = stop(proc)
    assert proc.returncode not in (0, None)
    assert "does not share" in out or "can not run this appliance's jobs" in out
    assert "/nonexistent/appliance" in out


def test_a_second_submission_of_the_same_attempt_gets_its_own_id(home: Home) -> None:
    from appliance.worker.executor import Launch

    executor = RayExecutor(RaySettings(address="http://127.0.0.1:8265"), home.root)
    launch = Launch(job_id=7, kind="noop", handler="x:y", params={}, attempt=1, gpus=(),
                    jobdir=home.job_dir(7), home=home.root, worker="w", config=fast_config())
    assert executor.submission_id(launch, []) == "appliance-job-7-attempt-1"
    # A job handed back on shutdown starts again with the same attempt number.
    assert executor.submission_id(launch, ["appliance-job-7-attempt-1"]) == \
        "appliance-job-7-attempt-1-2"
