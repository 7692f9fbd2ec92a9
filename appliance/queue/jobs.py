"""Submitting jobs and reading them back: what the CLI and the console call.

A job's row is the truth about it; its directory ``<home>/jobs/<id>/`` holds
what its process wrote (``job.log``, ``work/``, the result file).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appliance.audit import append
from appliance.audit.log import now_iso
from appliance.config import Config
from appliance.errors import BadInput, Conflict, NotFound
from appliance.gpu.placement import ResourceRequest
from appliance.queue import states
from appliance.queue.kinds import Kinds, check_submittable
from appliance.queue.states import JobState
from appliance.storage.db import Database, immediate
from appliance.storage.home import Home

LOG_FILE = "job.log"
MAX_PRIORITY = 1000


@dataclass(frozen=True)
class JobSpec:
    """What to run and under which limits; defaults come from the configuration."""

    kind: str
    params: dict[str, Any] = field(default_factory=dict)
    priority: int = 0
    max_attempts: int | None = None
    timeout_s: float | None = None
    request: ResourceRequest = ResourceRequest()

    def as_template(self) -> dict[str, Any]:
        """The JSON form a schedule stores and turns back into a spec."""
        return {
            "kind": self.kind, "params": self.params, "priority": self.priority,
            "max_attempts": self.max_attempts, "timeout_s": self.timeout_s,
            "gpus": self.request.gpus, "gpu_memory_mb": self.request.gpu_memory_mb,
            "cpus": self.request.cpus,
        }

    @classmethod
    def from_template(cls, t: Mapping[str, Any]) -> JobSpec:
        return cls(
            kind=t["kind"], params=dict(t.get("params") or {}), priority=int(t.get("priority", 0)),
            max_attempts=t.get("max_attempts"), timeout_s=t.get("timeout_s"),
            request=ResourceRequest(gpus=int(t.get("gpus", 0)),
                                    gpu_memory_mb=int(t.get("gpu_memory_mb", 0)),
                                    cpus=int(t.get("cpus", 1))),
        )


@dataclass(frozen=True)
class Job:
    id: int
    kind: str
    params: dict[str, Any]
    state: JobState
    priority: int
    attempts: int
    max_attempts: int
    timeout_s: float
    request: ResourceRequest
    submitted_by: str
    submitted_at: str
    started_at: str | None
    finished_at: str | None
    lease_owner: str | None
    lease_expires: float | None
    heartbeat_at: float | None
    pid: int | None
    host: str | None
    gpu_indices: tuple[int, ...]
    cancel_requested: bool
    wait_reason: str | None
    progress: dict[str, Any] | None
    result: Any
    error: str | None
    schedule_id: int | None
    fire_time: str | None

    @classmethod
    def from_row(cls, r: Mapping[str, Any]) -> Job:
        return cls(
            id=r["id"], kind=r["kind"], params=json.loads(r["params"]),
            state=JobState(r["state"]), priority=r["priority"], attempts=r["attempts"],
            max_attempts=r["max_attempts"], timeout_s=r["timeout_s"],
            request=ResourceRequest(r["gpus"], r["gpu_memory_mb"], r["cpus"]),
            submitted_by=r["submitted_by"], submitted_at=r["submitted_at"],
            started_at=r["started_at"], finished_at=r["finished_at"],
            lease_owner=r["lease_owner"], lease_expires=r["lease_expires"],
            heartbeat_at=r["heartbeat_at"], pid=r["pid"], host=r["host"],
            gpu_indices=tuple(json.loads(r["gpu_indices"])) if r["gpu_indices"] else (),
            cancel_requested=bool(r["cancel_requested"]), wait_reason=r["wait_reason"],
            progress=json.loads(r["progress"]) if r["progress"] else None,
            result=json.loads(r["result"]) if r["result"] is not None else None,
            error=r["error"], schedule_id=r["schedule_id"], fire_time=r["fire_time"],
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "kind": self.kind, "params": self.params, "state": self.state.value,
            "priority": self.priority, "attempts": self.attempts,
            "max_attempts": self.max_attempts, "timeout_s": self.timeout_s,
            "gpus": self.request.gpus, "gpu_memory_mb": self.request.gpu_memory_mb,
            "cpus": self.request.cpus, "submitted_by": self.submitted_by,
            "submitted_at": self.submitted_at, "started_at": self.started_at,
            "finished_at": self.finished_at, "worker": self.lease_owner,
            "lease_expires": self.lease_expires, "heartbeat_at": self.heartbeat_at,
            "pid": self.pid, "host": self.host, "gpu_indices": list(self.gpu_indices),
            "cancel_requested": self.cancel_requested, "wait_reason": self.wait_reason,
            "progress": self.progress, "result": self.result, "error": self.error,
            "schedule_id": self.schedule_id, "fire_time": self.fire_time,
        }


def check_spec(spec: JobSpec, config: Config, *, kinds: Kinds) -> tuple[int, float]:
    """Refuse a bad job before it is queued; return its attempts and timeout."""
    if not isinstance(spec.params, dict):
        raise BadInput("params must be a JSON object")
    try:
        json.dumps(spec.params, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise BadInput(f"params must be plain JSON: {exc}") from exc
    if not -MAX_PRIORITY <= spec.priority <= MAX_PRIORITY:
        raise BadInput(f"priority must be from {-MAX_PRIORITY} to {MAX_PRIORITY}")
    req = spec.request
    if req.gpus < 0 or req.gpus > 64:
        raise BadInput("gpus must be from 0 to 64")
    if req.gpu_memory_mb < 0:
        raise BadInput("gpu memory must be >= 0 MiB (0 asks for whole GPUs)")
    if req.gpu_memory_mb and not req.gpus:
        raise BadInput("gpu memory was given but gpus is 0; ask for --gpus 1 or more")
    if req.cpus < 0:
        raise BadInput("cpus must be >= 0")
    attempts = spec.max_attempts if spec.max_attempts is not None else config["queue.max_attempts"]
    if not 1 <= attempts <= 100:
        raise BadInput("max attempts must be from 1 to 100")
    timeout = spec.timeout_s if spec.timeout_s is not None else config["queue.timeout_s"]
    if not (isinstance(timeout, (int, float)) and math.isfinite(timeout) and timeout > 0):
        raise BadInput("timeout must be a number of seconds > 0")
    check_submittable(kinds, spec.kind, spec.params)
    return int(attempts), float(timeout)


def insert_job(
    db: Database,
    spec: JobSpec,
    config: Config,
    *,
    kinds: Kinds,
    actor: str,
    schedule_id: int | None = None,
    fire_time: str | None = None,
) -> int:
    """Queue a job inside the caller's transaction (a schedule firing uses this)."""
    limits = check_spec(spec, config, kinds=kinds)
    return _insert(db, spec, limits, actor=actor, schedule_id=schedule_id, fire_time=fire_time)


def _insert(
    db: Database,
    spec: JobSpec,
    limits: tuple[int, float],
    *,
    actor: str,
    schedule_id: int | None = None,
    fire_time: str | None = None,
) -> int:
    attempts, timeout = limits
    cur = db.execute(
        "INSERT INTO jobs (kind, params, state, priority, max_attempts, timeout_s, gpus,"
        " gpu_memory_mb, cpus, submitted_by, submitted_at, schedule_id, fire_time)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [spec.kind, json.dumps(spec.params), JobState.QUEUED.value, spec.priority, attempts,
         timeout, spec.request.gpus, spec.request.gpu_memory_mb, spec.request.cpus, actor,
         now_iso(), schedule_id, fire_time],
    )
    job_id = int(cur.lastrowid or 0)
    details: dict[str, Any] = {"kind": spec.kind, "priority": spec.priority,
                               "request": spec.request.describe()}
    if schedule_id is not None:
        details.update(schedule_id=schedule_id, fire_time=fire_time)
    append(db, actor=actor, action="job.submitted", target=f"job:{job_id}", details=details)
    return job_id


def submit(db: Database, spec: JobSpec, config: Config, *, kinds: Kinds,
           actor: str) -> int:
    """Queue a job; return its id."""
    limits = check_spec(spec, config, kinds=kinds)  # before the write lock: it may import a validator
    with immediate(db):
        return _insert(db, spec, limits, actor=actor)


def get_job(db: Database, job_id: int) -> Job:
    rows = list(db.query("SELECT * FROM jobs WHERE id = ?", [job_id]))
    if not rows:
        raise NotFound(f"job {job_id} does not exist; see 'appliance jobs list'")
    return Job.from_row(rows[0])


def list_jobs(
    db: Database,
    *,
    state: str | None = None,
    kind: str | None = None,
    limit: int = 50,
) -> list[Job]:
    """Newest first, optionally one state or kind."""
    where, args = [], []
    if state:
        try:
            where.append("state = ?")
            args.append(JobState(state).value)
        except ValueError as exc:
            raise BadInput(
                f"unknown state {state!r}; one of {', '.join(s.value for s in JobState)}"
            ) from exc
    if kind:
        where.append("kind = ?")
        args.append(kind)
    if limit < 1:
        raise BadInput("limit must be >= 1")
    sql = "SELECT * FROM jobs" + (" WHERE " + " AND ".join(where) if where else "")
    sql += " ORDER BY id DESC LIMIT ?"
    return [Job.from_row(r) for r in db.query(sql, [*args, limit])]


def queue_depth(db: Database) -> dict[str, Any]:
    """Jobs per state, and how many queued jobs wait on which reason."""
    counts = {s.value: 0 for s in JobState}
    for r in db.query("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state"):
        counts[r["state"]] = r["n"]
    waiting = {
        r["wait_reason"]: r["n"]
        for r in db.query(
            "SELECT wait_reason, COUNT(*) AS n FROM jobs WHERE state = 'queued'"
            " AND wait_reason IS NOT NULL GROUP BY wait_reason"
        )
    }
    return {"states": counts, "waiting": waiting}


def cancel_job(db: Database, job_id: int, *, actor: str) -> Job:
    """Cancel a queued job now; ask the worker of a running job to stop its process group."""
    with immediate(db):
        job = get_job(db, job_id)
        if job.state is JobState.QUEUED:
            states.cancel_queued(db, job_id, actor=actor)
        elif job.state is JobState.RUNNING:
            if job.cancel_requested:
                raise Conflict(f"job {job_id} is already being cancelled")
            states.request_cancel(db, job_id, actor=actor)
        else:
            raise Conflict(f"job {job_id} already finished ({job.state.value})")
    return get_job(db, job_id)


def job_dir(home: Home, job_id: int) -> Path:
    return home.job_dir(job_id)


def read_log(home: Home, job_id: int, offset: int = 0) -> tuple[str, int]:
    """The job log from byte ``offset`` on, and the offset to continue from."""
    path = home.job_dir(job_id) / LOG_FILE
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            data = fh.read()
    except FileNotFoundError:
        return "", offset
    return data.decode("utf-8", errors="replace"), offset + len(data)


def tail_log(home: Home, job_id: int, lines: int = 100) -> str:
    """The last ``lines`` lines of the job's log (empty before it first starts)."""
    text, _ = read_log(home, job_id)
    if lines <= 0:
        return text
    return "".join(text.splitlines(keepends=True)[-lines:])
