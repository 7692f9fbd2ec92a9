"""Claiming jobs, keeping their leases alive, and taking them back from dead workers.

A claim is one ``BEGIN IMMEDIATE`` transaction: it first takes back jobs whose
lease ran out, then walks the queued jobs best-first (priority, then age) and
starts the first whose resources fit. SQLite's write lock makes the walk and
the start one step, so two workers never start the same job.

A worker renews its leases with ``renew``; a worker that dies (even by
SIGKILL) stops renewing, and the next claim by any worker finds the lease
expired: the job is queued again, or failed when its attempts are used up,
and the reason is recorded. Before that, whatever is left of the dead
attempt's process group on this host is killed, so an attempt never runs
beside its own retry.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance.gpu.inventory import Inventory, InventorySource
from appliance.gpu.placement import Holdings, ResourceRequest, place
from appliance.queue import liveness, states
from appliance.queue.jobs import Job, get_job
from appliance.storage.db import Database, immediate

JOB_ENV = "APPLIANCE_JOB_ID"  # set in every job process, so its leftovers can be found
CANDIDATES = 50


@dataclass(frozen=True)
class ClaimLimits:
    """What the queue may hand out at once on this server."""

    lease_s: float
    cpus_total: int
    reserve_mb: int = 0


@dataclass(frozen=True)
class Renewal:
    held: bool  # False: the lease was lost; stop the job and forget it
    cancel_requested: bool


def serving_holdings(db: Database) -> dict[int, int]:
    """GPU memory (MiB per index) that live serving processes declare in their heartbeat.

    Serving writes ``{"gpu_memory_mb": {"0": 2048}}`` into its heartbeat details.
    """
    held: dict[int, int] = {}
    for row in liveness.live(db, "serving"):
        for index, mb in (row["details"].get("gpu_memory_mb") or {}).items():
            held[int(index)] = held.get(int(index), 0) + int(mb)
    return held


def holdings(db: Database, reserve_mb: int = 0) -> tuple[Holdings, int]:
    """GPU memory held by running jobs and serving, and the CPUs running jobs hold."""
    jobs_mb: dict[int, int] = {}
    exclusive: set[int] = set()
    cpus = 0
    for r in db.query(
        "SELECT gpu_indices, gpu_memory_mb, cpus FROM jobs WHERE state = 'running'"
    ):
        cpus += r["cpus"]
        for index in json.loads(r["gpu_indices"] or "[]"):
            if r["gpu_memory_mb"]:
                jobs_mb[index] = jobs_mb.get(index, 0) + r["gpu_memory_mb"]
            else:
                exclusive.add(index)
    return (
        Holdings(jobs_mb=jobs_mb, serving_mb=serving_holdings(db),
                 exclusive=frozenset(exclusive), reserve_mb=reserve_mb),
        cpus,
    )


def claim(
    db: Database,
    *,
    worker: str,
    limits: ClaimLimits,
    inventory: InventorySource,
    now: float | None = None,
) -> Job | None:
    """Start the best queued job that fits, leased to ``worker``; None when none does."""
    now = time.time() if now is None else now
    with immediate(db):
        _reap(db, actor=worker, now=now)
        queued = list(db.query(
            "SELECT id, gpus, gpu_memory_mb, cpus, attempts, wait_reason FROM jobs"
            " WHERE state = 'queued' ORDER BY priority DESC, id LIMIT ?", [CANDIDATES]
        ))
        if not queued:
            return None
        cpus_used = int(db.execute(
            "SELECT COALESCE(SUM(cpus), 0) FROM jobs WHERE state = 'running'").fetchone()[0])
        held: Holdings | None = None  # read only when a GPU job is considered
        inv: Inventory | None = None
        for row in queued:
            request = ResourceRequest(row["gpus"], row["gpu_memory_mb"], row["cpus"])
            reason = None
            if cpus_used and cpus_used + request.cpus > limits.cpus_total:
                reason = (f"CPUs busy: the job needs {request.cpus}, "
                          f"{limits.cpus_total - cpus_used} of {limits.cpus_total} free")
            gpu_indices: tuple[int, ...] = ()
            if reason is None and request.gpus:
                held = held or holdings(db, limits.reserve_mb)[0]
                inv = inv or inventory.read()
                placement = place(inv, request, held)
                reason, gpu_indices = placement.wait_reason, placement.gpu_indices
            if reason is not None:
                if reason != row["wait_reason"]:
                    db.execute("UPDATE jobs SET wait_reason = ? WHERE id = ?", [reason, row["id"]])
                continue
            states.start(
                db, row["id"], worker=worker, host=socket.gethostname(),
                lease_expires=now + limits.lease_s, now=now, gpu_indices=gpu_indices,
                attempt=row["attempts"] + 1,
            )
            return get_job(db, row["id"])
    return None


def renew(
    db: Database,
    *,
    worker: str,
    lease_s: float,
    jobs: dict[int, dict[str, Any]],
    now: float | None = None,
) -> dict[int, Renewal]:
    """Extend ``worker``'s leases; ``jobs`` maps id to fields to record (pid, progress)."""
    now = time.time() if now is None else now
    out: dict[int, Renewal] = {}
    with immediate(db):
        for job_id, extra in jobs.items():
            progress = extra.get("progress")
            cur = db.execute(
                "UPDATE jobs SET lease_expires = ?, heartbeat_at = ?,"
                " pid = COALESCE(?, pid), progress = COALESCE(?, progress)"
                " WHERE id = ? AND state = 'running' AND lease_owner = ?",
                [now + lease_s, now, extra.get("pid"),
                 json.dumps(progress) if progress is not None else None, job_id, worker],
            )
            if cur.rowcount != 1:
                out[job_id] = Renewal(held=False, cancel_requested=False)
                continue
            flag = db.execute("SELECT cancel_requested FROM jobs WHERE id = ?", [job_id]).fetchone()
            out[job_id] = Renewal(held=True, cancel_requested=bool(flag[0]))
    return out


def reap_expired(db: Database, *, actor: str,
                 now: float | None = None) -> list[tuple[int, str]]:
    """Take back every job whose lease ran out; return (id, new state) for each."""
    with immediate(db):
        return _reap(db, actor=actor, now=time.time() if now is None else now)


def _reap(db: Database, *, actor: str, now: float) -> list[tuple[int, str]]:
    done: list[tuple[int, str]] = []
    for r in list(db.query(
        "SELECT id, attempts, max_attempts, lease_owner, host, pid, cancel_requested"
        " FROM jobs WHERE state = 'running' AND lease_expires < ?", [now]
    )):
        if r["host"] == socket.gethostname() and r["pid"]:
            kill_leftovers(r["id"], r["pid"])
        owner = r["lease_owner"]
        lost = f"lease expired: worker {owner} stopped heartbeating"
        if r["cancel_requested"]:
            states.mark_cancelled(db, r["id"], actor=actor, owner=owner,
                                  reason=f"cancelled; {lost}")
            done.append((r["id"], "cancelled"))
        elif r["attempts"] < r["max_attempts"]:
            states.requeue(db, r["id"], actor=actor, owner=owner,
                           reason=f"{lost} (attempt {r['attempts']} of {r['max_attempts']})")
            done.append((r["id"], "queued"))
        else:
            states.fail(db, r["id"], actor=actor, owner=owner,
                        error=f"{lost}; all {r['max_attempts']} attempts used")
            done.append((r["id"], "failed"))
    return done


def _processes_of(job_id: int, pgid: int) -> list[int]:
    """PIDs in process group ``pgid`` that carry this job's marker in their environment."""
    marker = f"{JOB_ENV}={job_id}".encode() + b"\0"
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()
            if int(fields[2]) != pgid:
                continue
            if marker in (entry / "environ").read_bytes():
                found.append(int(entry.name))
        except (OSError, ValueError, IndexError):
            continue
    return found


def kill_leftovers(job_id: int, pgid: int, *, kill: Callable[[int, int], None] = os.kill) -> int:
    """SIGKILL what remains of a dead attempt's process group; return how many were hit.

    Only processes that carry the job's marker are touched, so a process group
    number reused by an unrelated program is left alone.
    """
    hit = 0
    for pid in _processes_of(job_id, pgid):
        try:
            kill(pid, signal.SIGKILL)
            hit += 1
        except ProcessLookupError:
            continue
    return hit
