"""Schedules: cron parsing, firing against a controlled clock, restarts, the single lock."""

from __future__ import annotations

import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from helpers.queue import daemon, fast_config, wait_for, write_config

from appliance.errors import BadInput, Conflict, NotFound
from appliance.queue.jobs import JobSpec, get_job, list_jobs
from appliance.scheduler import schedules
from appliance.scheduler.cron import next_after, parse_cron
from appliance.scheduler.daemon import SchedulerDaemon
from appliance.scheduler.lock import SchedulerLock
from appliance.storage.db import Database
from appliance.storage.home import Home

T0 = datetime(2024, 3, 4, 10, 0, 30, tzinfo=UTC)  # a Monday


def at(**delta: float) -> datetime:
    return T0 + timedelta(**delta)


def add(db: Database, name: str = "nightly", cron: str = "*/5 * * * *",
        **kw: object) -> schedules.Schedule:
    return schedules.add_schedule(db, fast_config(), name=name, cron=cron,
                                  spec=JobSpec("echo", {"from": name}), actor="local:ann",
                                  now=kw.get("now", T0))  # type: ignore[arg-type]


def test_cron_reads_weekdays_as_crontab_does() -> None:
    sunday = next_after(parse_cron("0 9 * * 0"), T0)
    assert sunday is not None and sunday.weekday() == 6 and sunday.hour == 9
    assert next_after(parse_cron("0 9 * * 7"), T0) == sunday
    weekdays = parse_cron("30 2 * * 1-5")
    fires = [T0]
    for _ in range(6):
        nxt = next_after(weekdays, fires[-1])
        assert nxt is not None
        fires.append(nxt)
    assert [f.weekday() for f in fires[1:]] == [1, 2, 3, 4, 0, 1]
    assert next_after(parse_cron("*/10 * * * * *"), T0) == at(seconds=10)
    berlin = next_after(parse_cron("0 12 * * *", "Europe/Berlin"), T0)
    assert berlin == datetime(2024, 3, 4, 11, 0, tzinfo=UTC)


@pytest.mark.parametrize("expr, tz, message", [
    ("* * *", "UTC", "has 3 fields"),
    ("61 * * * *", "UTC", "not valid"),
    ("0 0 * * 9", "UTC", "out of range"),
    ("0 0 * * *", "Mars/Olympus", "unknown time zone"),
])
def test_bad_cron_is_bad_input(expr: str, tz: str, message: str) -> None:
    with pytest.raises(BadInput, match=message):
        parse_cron(expr, tz)


def test_fires_once_per_due_time_with_a_controlled_clock(db: Database) -> None:
    schedule = add(db)
    config = fast_config()
    assert schedules.fire_due(db, config, now=at(minutes=4)) == []  # 10:04:30: not yet
    fired = schedules.fire_due(db, config, now=at(minutes=4, seconds=30))  # 10:05:00
    assert len(fired) == 1
    job = get_job(db, fired[0])
    assert job.kind == "echo" and job.params == {"from": "nightly"}
    assert job.schedule_id == schedule.id and job.fire_time == "2024-03-04T10:05:00.000000Z"
    assert job.submitted_by == "system:scheduler"
    # Asking again for the same moment, or a moment later, queues nothing more.
    assert schedules.fire_due(db, config, now=at(minutes=4, seconds=30)) == []
    assert schedules.fire_due(db, config, now=at(minutes=9)) == []
    assert len(schedules.fire_due(db, config, now=at(minutes=9, seconds=31))) == 1
    assert schedules.get_schedule(db, "nightly").last_fired_at == "2024-03-04T10:10:00.000000Z"


def test_missed_runs_coalesce_into_one(db: Database) -> None:
    add(db)
    fired = schedules.fire_due(db, fast_config(), now=at(hours=2))  # 24 runs missed
    assert len(fired) == 1
    assert get_job(db, fired[0]).fire_time == "2024-03-04T12:00:00.000000Z"
    entry = db.execute("SELECT entry FROM audit_log WHERE action = 'schedule.fired'").fetchone()[0]
    assert b'"coalesced":24' in entry


def test_a_restarted_scheduler_does_not_fire_twice(home: Home, db: Database) -> None:
    add(db)
    config = fast_config()
    first = home.db()
    second = home.db()
    try:
        assert len(schedules.fire_due(first, config, now=at(minutes=5))) == 1
        first.close()
        # A new process, on its own connection, catching up at start for the same time.
        assert schedules.fire_due(second, config, now=at(minutes=5, seconds=1)) == []
    finally:
        second.close()
    assert len(list_jobs(db)) == 1


def test_pause_skips_runs_and_resume_starts_from_now(db: Database) -> None:
    add(db)
    config = fast_config()
    schedules.set_enabled(db, "nightly", False, actor="local:ann", now=at(minutes=1))
    assert schedules.fire_due(db, config, now=at(minutes=30)) == []
    with pytest.raises(Conflict, match="already paused"):
        schedules.set_enabled(db, "nightly", False, actor="local:ann")
    schedules.set_enabled(db, "nightly", True, actor="local:ann", now=at(minutes=31))
    assert schedules.fire_due(db, config, now=at(minutes=34)) == []  # 10:34:30
    assert len(schedules.fire_due(db, config, now=at(minutes=35))) == 1  # 10:35
    actions = [r["action"] for r in db.query(
        "SELECT action FROM audit_log WHERE target = 'schedule:nightly' ORDER BY seq")]
    assert actions == ["schedule.added", "schedule.paused", "schedule.resumed", "schedule.fired"]


def test_the_kept_next_time_is_the_cron_time_after_each_change(db: Database) -> None:
    """Listing reads the next run each schedule keeps; it equals what the cron expression
    gives after adding, firing, pausing and resuming, and once it has passed with no
    scheduler to fire it, the next one is worked out afresh."""
    from dataclasses import replace

    def kept() -> str | None:
        return db.execute("SELECT next_fire_at FROM schedules WHERE name = 'nightly'"
                          ).fetchone()[0]

    def computed(schedule: schedules.Schedule, now: datetime) -> datetime | None:
        return replace(schedule, stored_next=None).next_fire(now)

    add(db)
    assert kept() == "2024-03-04T10:05:00.000000Z"
    config = fast_config()
    schedules.fire_due(db, config, now=at(minutes=4, seconds=30))  # fires 10:05
    assert kept() == "2024-03-04T10:10:00.000000Z"
    schedule = schedules.get_schedule(db, "nightly")
    for now in (at(minutes=5), at(minutes=9, seconds=29), at(minutes=9, seconds=30),
                at(hours=3)):  # the last after the kept time: worked out afresh
        assert schedule.next_fire(now) == computed(schedule, now), now
    assert schedule.next_fire(at(hours=3)) == datetime(2024, 3, 4, 13, 5, tzinfo=UTC)
    schedules.set_enabled(db, "nightly", False, actor="local:ann", now=at(minutes=6))
    assert kept() is None and schedules.get_schedule(db, "nightly").next_fire() is None
    schedules.set_enabled(db, "nightly", True, actor="local:ann", now=at(minutes=31))
    assert kept() == "2024-03-04T10:35:00.000000Z"
    # A row written before the column existed has none and is worked out as before.
    db.execute("UPDATE schedules SET next_fire_at = NULL")
    schedule = schedules.get_schedule(db, "nightly")
    assert schedule.next_fire(at(minutes=32)) == datetime(2024, 3, 4, 10, 35, tzinfo=UTC)


def test_add_and_remove_are_checked(db: Database) -> None:
    add(db)
    with pytest.raises(Conflict, match="already exists"):
        add(db)
    with pytest.raises(BadInput, match="schedule name"):
        add(db, name="bad name")
    with pytest.raises(BadInput, match="unknown job kind"):
        schedules.add_schedule(db, fast_config(), name="x", cron="* * * * *",
                               spec=JobSpec("nope"), actor="t")
    schedules.remove_schedule(db, "nightly", actor="local:ann")
    with pytest.raises(NotFound):
        schedules.remove_schedule(db, "nightly", actor="local:ann")


def test_the_lock_admits_one_scheduler(db: Database, home: Home) -> None:
    other_db = home.db()
    try:
        a = SchedulerLock(db, lock_s=30)
        b = SchedulerLock(other_db, lock_s=30)
        a.acquire()
        with pytest.raises(Conflict, match="another scheduler is running"):
            b.acquire()
        assert a.renew()
        # After expiry, the other takes over, and the first learns it lost the lock.
        b.acquire(now=time.time() + 31)
        assert not a.renew()
        b.release()
        a.acquire()
    finally:
        other_db.close()


def test_daemon_fires_on_time_refuses_a_second_and_restarts_cleanly(
    home: Home, db: Database, tmp_path: Path,
) -> None:
    schedules.add_schedule(db, fast_config(), name="every-second", cron="* * * * * *",
                           spec=JobSpec("noop"), actor="t")
    cfg = write_config(tmp_path / "fast.yaml", fast_config())
    proc = daemon(home.root, cfg, "scheduler")
    try:
        wait_for(lambda: len(list_jobs(db)) >= 2, timeout=30)
        second = daemon(home.root, cfg, "scheduler")
        out, _ = second.communicate(timeout=30)
        assert second.returncode == 1 and b"another scheduler is running" in out
        # A change to the table is picked up without a restart.
        schedules.set_enabled(db, "every-second", False, actor="t")
        time.sleep(1.0)
        paused_at = len(list_jobs(db, limit=1000))
        time.sleep(1.5)
        assert len(list_jobs(db, limit=1000)) == paused_at
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)
        assert proc.returncode == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    fire_times = [j.fire_time for j in list_jobs(db, limit=1000)]
    assert len(fire_times) == len(set(fire_times))
    assert db.execute("SELECT COUNT(*) FROM scheduler_lock").fetchone()[0] == 0
    # Restart: the next daemon takes the lock and starts without re-firing old runs.
    restarted = SchedulerDaemon(home, fast_config())
    restarted.start()
    restarted.stop()
    assert len(list_jobs(db, limit=1000)) == paused_at


def test_one_unreadable_schedule_does_not_keep_the_others_from_loading(
    home: Home, db: Database,
) -> None:
    schedules.add_schedule(db, fast_config(), name="good", cron="0 3 * * *",
                           spec=JobSpec("noop"), actor="t")
    schedules.add_schedule(db, fast_config(), name="later", cron="0 4 * * *",
                           spec=JobSpec("noop"), actor="t")
    # A row no longer valid for this version's parser (written by hand or an older release).
    db.execute("UPDATE schedules SET cron = 'not a cron' WHERE name = 'good'")
    daemon_ = SchedulerDaemon(home, fast_config())
    daemon_.start()
    try:
        loaded = {job.name for job in daemon_._aps.get_jobs()}
    finally:
        daemon_.stop()
    assert "later" in loaded and "good" not in loaded
