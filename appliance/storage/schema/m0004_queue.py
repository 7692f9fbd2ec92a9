"""The job queue, the schedules that feed it, and the scheduler's single-instance lock.

Times a person reads (submitted, started, finished) are ISO-8601 UTC text;
times the queue compares on every claim (lease expiry, heartbeat) are Unix
seconds, so the comparison is a plain indexed number comparison.
"""

from __future__ import annotations

from appliance.storage.db import Database
from appliance.storage.migrations import Migration

DATABASE = "appliance"


def _jobs(db: Database) -> None:
    db.execute(
        "CREATE TABLE jobs ("
        " id INTEGER PRIMARY KEY AUTOINCREMENT,"
        " kind TEXT NOT NULL,"
        " params TEXT NOT NULL DEFAULT '{}',"
        " state TEXT NOT NULL CHECK (state IN"
        "   ('queued', 'running', 'succeeded', 'failed', 'cancelled')),"
        " priority INTEGER NOT NULL DEFAULT 0,"
        " attempts INTEGER NOT NULL DEFAULT 0,"
        " max_attempts INTEGER NOT NULL DEFAULT 3,"
        " timeout_s REAL NOT NULL,"
        " gpus INTEGER NOT NULL DEFAULT 0,"
        " gpu_memory_mb INTEGER NOT NULL DEFAULT 0,"
        " cpus INTEGER NOT NULL DEFAULT 1,"
        " submitted_by TEXT NOT NULL,"
        " submitted_at TEXT NOT NULL,"
        " started_at TEXT,"
        " finished_at TEXT,"
        " lease_owner TEXT,"
        " lease_expires REAL,"
        " heartbeat_at REAL,"
        " pid INTEGER,"
        " host TEXT,"
        " gpu_indices TEXT,"
        " cancel_requested INTEGER NOT NULL DEFAULT 0,"
        " wait_reason TEXT,"
        " progress TEXT,"
        " result TEXT,"
        " error TEXT,"
        " schedule_id INTEGER,"
        " fire_time TEXT)"
    )
    # The claim query: the best queued job first.
    db.execute("CREATE INDEX jobs_claim ON jobs (state, priority DESC, id)")
    # The reaper's query: running jobs whose lease ran out.
    db.execute("CREATE INDEX jobs_lease ON jobs (state, lease_expires)")
    # One job per schedule and fire time, whatever happens to the scheduler.
    db.execute(
        "CREATE UNIQUE INDEX jobs_schedule_fire ON jobs (schedule_id, fire_time)"
        " WHERE schedule_id IS NOT NULL"
    )


def _schedules(db: Database) -> None:
    db.execute(
        "CREATE TABLE schedules ("
        " id INTEGER PRIMARY KEY AUTOINCREMENT,"
        " name TEXT NOT NULL UNIQUE,"
        " cron TEXT NOT NULL,"
        " timezone TEXT NOT NULL DEFAULT 'UTC',"
        " template TEXT NOT NULL,"
        " enabled INTEGER NOT NULL DEFAULT 1,"
        " created_by TEXT NOT NULL,"
        " created_at TEXT NOT NULL,"
        " updated_at TEXT NOT NULL,"
        " last_checked_at TEXT NOT NULL,"
        " last_fired_at TEXT,"
        " last_job_id INTEGER)"
    )


def _scheduler_lock(db: Database) -> None:
    db.execute(
        "CREATE TABLE scheduler_lock ("
        " name TEXT PRIMARY KEY,"
        " owner TEXT NOT NULL,"
        " host TEXT NOT NULL,"
        " pid INTEGER NOT NULL,"
        " acquired_at TEXT NOT NULL,"
        " expires_at REAL NOT NULL)"
    )


MIGRATIONS = [
    Migration("queue.0001_jobs", _jobs),
    Migration("queue.0002_schedules", _schedules),
    Migration("queue.0003_scheduler_lock", _scheduler_lock),
]
