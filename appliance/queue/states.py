"""A job's states and the named transitions between them.

```
queued ──start──▶ running ──succeed──▶ succeeded
  │                 │ │ └───fail─────▶ failed
  │                 │ └─mark_cancelled▶ cancelled
  │                 ├─requeue (lease lost) / release (handed back) ─▶ queued
  └──cancel_queued──────────────────────▶ cancelled
```

Each transition runs inside the caller's ``immediate()`` transaction, changes
the row only if it is still in the expected from-state (and, for a running
job, still leased by the caller), and appends its audit entry in the same
transaction. A transition whose from-state no longer holds raises
``Conflict``: another process got there first, and the caller must not act
as if it had won.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any

from appliance.audit import append
from appliance.audit.log import now_iso
from appliance.errors import Conflict, NotFound
from appliance.storage.db import Database


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})


def _target(job_id: int) -> str:
    return f"job:{job_id}"


def _update(
    db: Database,
    job_id: int,
    from_state: JobState,
    sets: dict[str, Any],
    *,
    owner: str | None = None,
) -> None:
    """Apply ``sets`` if the job is in ``from_state`` (and leased by ``owner``)."""
    if not db.conn.in_transaction:
        raise RuntimeError("job transitions must run inside immediate()")
    cols = ", ".join(f"{k} = ?" for k in sets)
    sql = f"UPDATE jobs SET {cols} WHERE id = ? AND state = ?"
    args: list[Any] = [*sets.values(), job_id, from_state.value]
    if owner is not None:
        sql += " AND lease_owner = ?"
        args.append(owner)
    if db.execute(sql, args).rowcount == 1:
        return
    row = db.execute("SELECT state, lease_owner FROM jobs WHERE id = ?", [job_id]).fetchone()
    if row is None:
        raise NotFound(f"job {job_id} does not exist; see 'appliance jobs list'")
    if row[0] != from_state.value:
        raise Conflict(f"job {job_id} is {row[0]}, not {from_state.value}")
    raise Conflict(f"job {job_id} is leased by {row[1]}, not {owner}")


def start(
    db: Database,
    job_id: int,
    *,
    worker: str,
    host: str,
    lease_expires: float,
    now: float,
    gpu_indices: tuple[int, ...],
    attempt: int,
) -> None:
    """queued → running: the worker holds a lease until ``lease_expires``."""
    _update(
        db, job_id, JobState.QUEUED,
        {
            "state": JobState.RUNNING.value, "attempts": attempt, "lease_owner": worker,
            "host": host, "lease_expires": lease_expires, "heartbeat_at": now,
            "started_at": now_iso(), "finished_at": None, "pid": None,
            "gpu_indices": json.dumps(list(gpu_indices)), "wait_reason": None,
        },
    )
    append(db, actor=worker, action="job.started", target=_target(job_id),
           details={"attempt": attempt, "gpus": list(gpu_indices), "host": host})


def succeed(db: Database, job_id: int, *, worker: str, result: Any) -> None:
    """running → succeeded, with the handler's JSON result."""
    _update(
        db, job_id, JobState.RUNNING,
        {"state": JobState.SUCCEEDED.value, "result": json.dumps(result),
         "finished_at": now_iso(), "lease_owner": None, "lease_expires": None, "error": None},
        owner=worker,
    )
    append(db, actor=worker, action="job.succeeded", target=_target(job_id))


def fail(db: Database, job_id: int, *, actor: str, error: str,
         owner: str | None = None) -> None:
    """running → failed, with the reason. ``owner`` checks the lease when a worker fails it."""
    _update(
        db, job_id, JobState.RUNNING,
        {"state": JobState.FAILED.value, "error": error, "finished_at": now_iso(),
         "lease_owner": None, "lease_expires": None},
        owner=owner,
    )
    append(db, actor=actor, action="job.failed", target=_target(job_id),
           details={"error": error})


def mark_cancelled(db: Database, job_id: int, *, actor: str, reason: str,
                   owner: str | None = None) -> None:
    """running → cancelled, once the job's process group is gone (or its worker is)."""
    _update(
        db, job_id, JobState.RUNNING,
        {"state": JobState.CANCELLED.value, "error": reason, "finished_at": now_iso(),
         "lease_owner": None, "lease_expires": None},
        owner=owner,
    )
    append(db, actor=actor, action="job.cancelled", target=_target(job_id),
           details={"reason": reason})


def cancel_queued(db: Database, job_id: int, *, actor: str) -> None:
    """queued → cancelled: it never started, so nothing needs stopping."""
    _update(
        db, job_id, JobState.QUEUED,
        {"state": JobState.CANCELLED.value, "error": f"cancelled by {actor} before it started",
         "finished_at": now_iso(), "wait_reason": None},
    )
    append(db, actor=actor, action="job.cancelled", target=_target(job_id),
           details={"reason": "cancelled before it started"})


def request_cancel(db: Database, job_id: int, *, actor: str) -> None:
    """Flag a running job; its worker stops the process group and marks it cancelled."""
    _update(db, job_id, JobState.RUNNING, {"cancel_requested": 1})
    append(db, actor=actor, action="job.cancel_requested", target=_target(job_id))


def requeue(db: Database, job_id: int, *, actor: str, reason: str,
            owner: str) -> None:
    """running → queued after a lost lease; the attempt it used stays counted."""
    _update(
        db, job_id, JobState.RUNNING,
        {"state": JobState.QUEUED.value, "lease_owner": None, "lease_expires": None,
         "pid": None, "gpu_indices": None, "error": reason},
        owner=owner,
    )
    append(db, actor=actor, action="job.requeued", target=_target(job_id),
           details={"reason": reason})


def release(db: Database, job_id: int, *, worker: str, reason: str) -> None:
    """running → queued, handed back by a stopping worker; the attempt is given back too."""
    _update(
        db, job_id, JobState.RUNNING,
        {"state": JobState.QUEUED.value, "lease_owner": None, "lease_expires": None,
         "pid": None, "gpu_indices": None, "error": reason},
        owner=worker,
    )
    db.execute("UPDATE jobs SET attempts = MAX(0, attempts - 1) WHERE id = ?", [job_id])
    append(db, actor=worker, action="job.released", target=_target(job_id),
           details={"reason": reason})
