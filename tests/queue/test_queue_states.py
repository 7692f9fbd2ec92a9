"""The queue in one process: submitting, transitions, claim order, leases and GPU placement."""

from __future__ import annotations

import json
import time

import pytest
from helpers.queue import fast_config, gpu, submit

from appliance.errors import BadInput, Conflict, NotFound
from appliance.gpu.inventory import Inventory, StaticSource
from appliance.gpu.placement import BUSY, NO_GPU, Holdings, ResourceRequest, place
from appliance.queue import liveness, states
from appliance.queue.jobs import JobSpec, cancel_job, get_job, list_jobs, queue_depth
from appliance.queue.lease import ClaimLimits, claim, reap_expired, renew
from appliance.queue.states import JobState
from appliance.storage.db import Database, immediate

LIMITS = ClaimLimits(lease_s=10.0, cpus_total=8)
NO_GPUS = StaticSource([])


def audit_actions(db: Database, job_id: int) -> list[str]:
    return [r["action"] for r in db.query(
        "SELECT action FROM audit_log WHERE target = ? ORDER BY seq", [f"job:{job_id}"])]


def test_submit_records_the_job_and_its_audit_entry(db: Database) -> None:
    config = fast_config()
    job_id = submit(db, JobSpec("sleep", {"seconds": 2}, priority=3), config, actor="local:ann")
    job = get_job(db, job_id)
    assert job.state is JobState.QUEUED
    assert (job.params, job.priority, job.attempts) == ({"seconds": 2}, 3, 0)
    assert job.max_attempts == config["queue.max_attempts"]
    assert job.timeout_s == config["queue.timeout_s"]
    assert job.submitted_by == "local:ann"
    entry = json.loads(db.execute(
        "SELECT entry FROM audit_log WHERE target = ?", [f"job:{job_id}"]).fetchone()[0])
    assert entry["action"] == "job.submitted" and entry["actor"] == "local:ann"
    assert entry["details"]["kind"] == "sleep"


@pytest.mark.parametrize(
    "spec, field",
    [
        (JobSpec("bogus"), "unknown job kind"),
        (JobSpec("sleep", {"seconds": -1}), "params.seconds"),
        (JobSpec("noop", priority=5000), "priority"),
        (JobSpec("noop", request=ResourceRequest(gpus=0, gpu_memory_mb=100)), "gpu memory"),
        (JobSpec("noop", timeout_s=0), "timeout"),
        (JobSpec("noop", max_attempts=0), "max attempts"),
    ],
)
def test_bad_submissions_name_the_problem(db: Database, spec: JobSpec,
                                          field: str) -> None:
    with pytest.raises(BadInput, match=field):
        submit(db, spec, fast_config(), actor="t")
    assert list_jobs(db) == []


def test_kind_whose_service_is_missing_is_refused(db: Database,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from appliance.jobs import KINDS
    from appliance.queue.kinds import JobKind

    missing = JobKind("later", "appliance.not_installed_here:run", "not here")
    monkeypatch.setitem(KINDS, "later", missing)
    with pytest.raises(BadInput, match="not available on this installation"):
        submit(db, JobSpec("later"), fast_config(), actor="t")


def test_claim_takes_highest_priority_then_oldest(db: Database) -> None:
    config = fast_config()
    low = submit(db, JobSpec("noop", priority=0), config, actor="t")
    high = submit(db, JobSpec("noop", priority=10), config, actor="t")
    high2 = submit(db, JobSpec("noop", priority=10), config, actor="t")
    urgent = submit(db, JobSpec("noop", priority=100), config, actor="t")
    order = []
    while (job := claim(db, worker="w1", limits=LIMITS, inventory=NO_GPUS)) is not None:
        order.append(job.id)
    assert order == [urgent, high, high2, low]
    job = get_job(db, urgent)
    assert job.state is JobState.RUNNING and job.attempts == 1 and job.lease_owner == "w1"


def test_transitions_check_their_from_state_and_owner(db: Database) -> None:
    job_id = submit(db, JobSpec("noop"), fast_config(), actor="t")
    with immediate(db), pytest.raises(Conflict, match="is queued, not running"):
        states.succeed(db, job_id, worker="w1", result={})
    claim(db, worker="w1", limits=LIMITS, inventory=NO_GPUS)
    with immediate(db), pytest.raises(Conflict, match="leased by w1"):
        states.succeed(db, job_id, worker="w2", result={})
    with immediate(db):
        states.succeed(db, job_id, worker="w1", result={"answer": 42})
    job = get_job(db, job_id)
    assert job.state is JobState.SUCCEEDED and job.result == {"answer": 42}
    assert job.lease_owner is None and job.finished_at
    with immediate(db), pytest.raises(Conflict, match="is succeeded"):
        states.fail(db, job_id, actor="w1", error="late")
    with immediate(db), pytest.raises(NotFound):
        states.succeed(db, 9999, worker="w1", result={})
    assert audit_actions(db, job_id) == ["job.submitted", "job.started", "job.succeeded"]


def test_a_transition_without_a_transaction_is_refused(db: Database) -> None:
    job_id = submit(db, JobSpec("noop"), fast_config(), actor="t")
    with pytest.raises(RuntimeError, match="immediate"):
        states.cancel_queued(db, job_id, actor="t")


def test_two_claimers_never_get_the_same_job(home, db: Database) -> None:
    config = fast_config()
    ids = {submit(db, JobSpec("noop"), config, actor="t") for _ in range(20)}
    other = home.db()
    try:
        got: list[int] = []
        for i in range(20):
            conn = db if i % 2 else other
            job = claim(conn, worker=f"w{i % 2}", limits=ClaimLimits(10, 100), inventory=NO_GPUS)
            assert job is not None
            got.append(job.id)
        assert claim(other, worker="w0", limits=ClaimLimits(10, 100), inventory=NO_GPUS) is None
    finally:
        other.close()
    assert sorted(got) == sorted(ids)


def test_cancel_queued_and_running(db: Database) -> None:
    config = fast_config()
    queued = submit(db, JobSpec("noop"), config, actor="t")
    running = submit(db, JobSpec("noop", priority=1), config, actor="t")
    claim(db, worker="w1", limits=LIMITS, inventory=NO_GPUS)
    assert cancel_job(db, queued, actor="local:bob").state is JobState.CANCELLED
    job = cancel_job(db, running, actor="local:bob")
    assert job.state is JobState.RUNNING and job.cancel_requested
    replies = renew(db, worker="w1", lease_s=5, jobs={running: {}})
    assert replies[running].held and replies[running].cancel_requested
    with pytest.raises(Conflict, match="already being cancelled"):
        cancel_job(db, running, actor="local:bob")
    with pytest.raises(Conflict, match="already finished"):
        cancel_job(db, queued, actor="local:bob")
    assert "job.cancel_requested" in audit_actions(db, running)


def test_expired_lease_requeues_then_fails_when_attempts_run_out(
    db: Database,
) -> None:
    job_id = submit(db, JobSpec("noop", max_attempts=2), fast_config(), actor="t")
    t0 = time.time()
    claim(db, worker="dead1", limits=LIMITS, inventory=NO_GPUS, now=t0)
    assert reap_expired(db, actor="w2", now=t0 + 5) == []  # lease still valid
    assert reap_expired(db, actor="w2", now=t0 + 11) == [(job_id, "queued")]
    job = get_job(db, job_id)
    assert job.state is JobState.QUEUED and job.attempts == 1
    assert "lease expired: worker dead1 stopped heartbeating" in (job.error or "")
    # The new owner renews; the dead one can no longer.
    claim(db, worker="dead2", limits=LIMITS, inventory=NO_GPUS, now=t0 + 12)
    assert not renew(db, worker="dead1", lease_s=10, jobs={job_id: {}}, now=t0 + 12)[job_id].held
    assert get_job(db, job_id).attempts == 2
    assert reap_expired(db, actor="w3", now=t0 + 30) == [(job_id, "failed")]
    job = get_job(db, job_id)
    assert job.state is JobState.FAILED and "all 2 attempts used" in (job.error or "")
    assert audit_actions(db, job_id) == [
        "job.submitted", "job.started", "job.requeued", "job.started", "job.failed"]


def test_renewal_keeps_the_lease(db: Database) -> None:
    job_id = submit(db, JobSpec("noop"), fast_config(), actor="t")
    t0 = time.time()
    claim(db, worker="w1", limits=LIMITS, inventory=NO_GPUS, now=t0)
    renew(db, worker="w1", lease_s=10, jobs={job_id: {"pid": 1234, "progress": {"fraction": 0.5}}},
          now=t0 + 8)
    assert reap_expired(db, actor="w2", now=t0 + 15) == []
    job = get_job(db, job_id)
    assert job.pid == 1234 and job.progress == {"fraction": 0.5}


def test_cancel_of_a_running_job_whose_worker_died_ends_cancelled(
    db: Database,
) -> None:
    job_id = submit(db, JobSpec("noop"), fast_config(), actor="t")
    t0 = time.time()
    claim(db, worker="dead", limits=LIMITS, inventory=NO_GPUS, now=t0)
    cancel_job(db, job_id, actor="t")
    assert reap_expired(db, actor="w2", now=t0 + 11) == [(job_id, "cancelled")]


# -- GPU placement -------------------------------------------------------------


def test_place_distinguishes_no_gpu_from_busy() -> None:
    req = ResourceRequest(gpus=1, gpu_memory_mb=8000)
    none = place(Inventory(reason="no GPU on this server (NVML: not found)"), req, Holdings())
    assert not none.fits and none.wait_reason.startswith(NO_GPU)
    inv = StaticSource([gpu(0, 16000), gpu(1, 16000)]).read()
    busy = place(inv, req, Holdings(jobs_mb={0: 10000}, serving_mb={1: 9000}))
    assert not busy.fits and busy.wait_reason.startswith(BUSY)
    assert "gpu0 6000 MiB free" in busy.wait_reason and "gpu1 7000 MiB free" in busy.wait_reason
    too_many = place(inv, ResourceRequest(gpus=3, gpu_memory_mb=1), Holdings())
    assert "this server has 2" in (too_many.wait_reason or "")
    assert place(inv, ResourceRequest(cpus=4), Holdings()).gpu_indices == ()


def test_place_picks_the_emptiest_gpu_and_counts_measured_use() -> None:
    inv = StaticSource([gpu(0, 16000, used_mb=12000), gpu(1, 16000, used_mb=1000)]).read()
    req = ResourceRequest(gpus=1, gpu_memory_mb=5000)
    assert place(inv, req, Holdings()).gpu_indices == (1,)
    # NVML's measured use beats a smaller commitment (gpu0: 4000 free), and a larger
    # commitment beats what NVML measures (gpu1: 16000 - 12000 committed = 4000 free).
    assert not place(inv, req, Holdings(jobs_mb={1: 12000})).fits
    assert place(inv, req, Holdings(jobs_mb={1: 11000})).gpu_indices == (1,)
    # Headroom is never handed out.
    assert not place(inv, ResourceRequest(gpus=1, gpu_memory_mb=14500), Holdings(reserve_mb=600)).fits
    whole = place(inv, ResourceRequest(gpus=1), Holdings(jobs_mb={1: 100}))
    assert whole.gpu_indices == (0,)


def test_gpu_jobs_wait_for_room_and_serving_memory_is_never_taken(
    db: Database,
) -> None:
    config = fast_config()
    source = StaticSource([gpu(0, 16000)])
    # The serving daemon declares 5000 MiB on gpu0 in its heartbeat.
    liveness.beat(db, "serving", "2024-01-01T00:00:00Z", {"gpu_memory_mb": {"0": 5000}})
    big = submit(db, JobSpec("noop", priority=9,
                             request=ResourceRequest(gpus=1, gpu_memory_mb=8000)), config, actor="t")
    second = submit(db, JobSpec("noop", priority=8,
                                request=ResourceRequest(gpus=1, gpu_memory_mb=4000)), config,
                    actor="t")
    cpu = submit(db, JobSpec("noop"), config, actor="t")
    first = claim(db, worker="w", limits=LIMITS, inventory=source)
    assert first is not None and first.id == big and first.gpu_indices == (0,)
    # 16000 - 5000 serving - 8000 job = 3000 free: the 4000 MiB job waits, the CPU job runs.
    nxt = claim(db, worker="w", limits=LIMITS, inventory=source)
    assert nxt is not None and nxt.id == cpu
    waiting = get_job(db, second)
    assert waiting.state is JobState.QUEUED and waiting.wait_reason.startswith(BUSY)
    assert "gpu0 3000 MiB free" in waiting.wait_reason
    assert queue_depth(db)["waiting"] == {waiting.wait_reason: 1}
    with immediate(db):
        states.succeed(db, big, worker="w", result=None)
    placed = claim(db, worker="w", limits=LIMITS, inventory=source)
    assert placed is not None and placed.id == second and placed.gpu_indices == (0,)
    assert get_job(db, second).wait_reason is None


def test_gpu_job_on_a_server_without_gpus_waits_and_says_why(db: Database) -> None:
    config = fast_config()
    job_id = submit(db, JobSpec("noop", priority=5, request=ResourceRequest(gpus=1)), config,
                    actor="t")
    cpu = submit(db, JobSpec("noop"), config, actor="t")
    got = claim(db, worker="w", limits=LIMITS, inventory=NO_GPUS)
    assert got is not None and got.id == cpu
    assert claim(db, worker="w", limits=LIMITS, inventory=NO_GPUS) is None
    assert get_job(db, job_id).wait_reason.startswith("no GPU on this server")


def test_cpu_budget_is_respected(db: Database) -> None:
    config = fast_config()
    limits = ClaimLimits(lease_s=10, cpus_total=4)
    a = submit(db, JobSpec("noop", request=ResourceRequest(cpus=3)), config, actor="t")
    b = submit(db, JobSpec("noop", request=ResourceRequest(cpus=2)), config, actor="t")
    assert claim(db, worker="w", limits=limits, inventory=NO_GPUS).id == a
    assert claim(db, worker="w", limits=limits, inventory=NO_GPUS) is None
    assert get_job(db, b).wait_reason.startswith("CPUs busy")
