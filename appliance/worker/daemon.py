"""The worker: claim jobs, run them through an executor, keep their leases, record how they end.

``Worker.step()`` does one round of bookkeeping without blocking, so tests can
drive a worker by hand; ``Worker.run()`` loops over it until asked to stop.
Stopping is bounded: no new claims, running jobs get ``shutdown_grace_s`` to
finish, then their process groups get SIGTERM and, after ``kill_grace_s``,
SIGKILL, and each is handed back to the queue without using up an attempt.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from appliance.audit.log import now_iso
from appliance.config import Config
from appliance.errors import ApplianceError, BadInput, Conflict, NotFound, StorageError
from appliance.gpu.inventory import InventorySource
from appliance.gpu.placement import inventory_source
from appliance.jobs import KINDS
from appliance.queue import liveness, states
from appliance.queue.jobs import Job
from appliance.queue.kinds import Kinds, get_kind
from appliance.queue.lease import ClaimLimits, claim, renew
from appliance.storage.db import Database, immediate
from appliance.storage.home import Home
from appliance.system import sdnotify
from appliance.worker.executor import Executor, JobHandle, Launch, LocalProcessExecutor, Outcome
from appliance.worker.ray_jobs import RayExecutor

log = logging.getLogger("appliance.worker")
SERVICE = "worker"


@dataclass(frozen=True)
class WorkerSettings:
    lease_s: float = 30.0
    poll_s: float = 1.0
    max_jobs: int = 1
    shutdown_grace_s: float = 30.0
    kill_grace_s: float = 10.0
    cpus_total: int = 1
    reserve_mb: int = 0
    inventory_file: str = ""

    @classmethod
    def from_config(cls, config: Config) -> WorkerSettings:
        return cls(
            lease_s=config["queue.lease_s"], poll_s=config["worker.poll_s"],
            max_jobs=config["worker.max_jobs"],
            shutdown_grace_s=config["worker.shutdown_grace_s"],
            kill_grace_s=config["worker.kill_grace_s"],
            cpus_total=config["queue.cpus"] or os.cpu_count() or 1,
            reserve_mb=config["gpu.reserve_mb"], inventory_file=config["gpu.inventory_file"],
        )


def make_executor(config: Config, home: Home) -> Executor:
    """The executor ``worker.executor`` names: local child processes, or a Ray cluster."""
    if config["worker.executor"] == "ray":
        return RayExecutor.from_config(config, home.root)
    return LocalProcessExecutor()


@dataclass
class Running:
    job: Job
    handle: JobHandle
    started: float
    stop_reason: str | None = None  # "timeout", "cancel", "shutdown", "lost"
    kill_at: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Worker:
    def __init__(
        self,
        home: Home,
        config: Config,
        *,
        settings: WorkerSettings | None = None,
        executor: Executor | None = None,
        inventory: InventorySource | None = None,
        kinds: Kinds = KINDS,
    ) -> None:
        self.home = home
        self.config = config
        self.kinds = kinds
        self.settings = settings or WorkerSettings.from_config(config)
        self.executor = executor or make_executor(config, home)
        self.inventory = inventory or inventory_source(self.settings.inventory_file)
        self.id = f"worker:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.db: Database = home.db()
        self.running: dict[int, Running] = {}
        self.draining = False
        self._started_at = now_iso()
        self._last_claim = 0.0
        self._last_beat = 0.0
        self._limits = ClaimLimits(self.settings.lease_s, self.settings.cpus_total,
                                   self.settings.reserve_mb)

    # -- one round -------------------------------------------------------------

    def step(self) -> bool:
        """Check running jobs, renew leases when due, and claim when there is room.

        Returns True when something changed (a job started or ended), so the
        caller can skip its sleep.
        """
        now = time.monotonic()
        changed = self._check_running(now)
        if now - self._last_beat >= self.settings.lease_s / 3:
            self._heartbeat(now)
            sweep = getattr(self.executor, "sweep", None)  # Ray jobs nobody follows
            if sweep is not None:
                sweep()
        if (not self.draining and len(self.running) < self.settings.max_jobs
                and (changed or now - self._last_claim >= self.settings.poll_s)):
            self._last_claim = now
            changed = self._claim_one() or changed
        return changed

    def _claim_one(self) -> bool:
        job = claim(self.db, worker=self.id, limits=self._limits, inventory=self.inventory)
        if job is None:
            return False
        try:
            launch = Launch(
                job_id=job.id, kind=job.kind, handler=get_kind(self.kinds, job.kind).handler,
                params=job.params, attempt=job.attempts, gpus=job.gpu_indices,
                jobdir=self.home.job_dir(job.id), home=self.home.root, worker=self.id,
                config=self.config, cpus=job.request.cpus, num_gpus=job.request.gpus,
            )
            handle = self.executor.start(launch)
        except (BadInput, OSError) as exc:
            # The kind is gone from this installation, or the job directory can not be
            # written: the job can not start here, and saying so beats retrying it forever.
            with immediate(self.db):
                states.fail(self.db, job.id, actor=self.id, owner=self.id,
                            error=f"could not start: {exc}")
            return True
        self.running[job.id] = Running(job=job, handle=handle, started=time.monotonic())
        self._renew({job.id: {"pid": handle.pid}})
        log.info("job %s (%s) attempt %s started, pid %s", job.id, job.kind, job.attempts,
                 handle.pid)
        return True

    def _check_running(self, now: float) -> bool:
        changed = False
        for job_id, run in list(self.running.items()):
            outcome = run.handle.poll()
            if outcome is not None:
                self._finish(run, outcome)
                del self.running[job_id]
                changed = True
                continue
            if run.stop_reason is None and now - run.started > run.job.timeout_s:
                self._stop(run, "timeout", now)
            if run.kill_at is not None and now >= run.kill_at:
                run.handle.kill()
                run.kill_at = None
        return changed

    def _stop(self, run: Running, reason: str, now: float) -> None:
        """SIGTERM the attempt's process group now, SIGKILL it after the grace period."""
        if run.stop_reason is not None:
            return
        run.stop_reason = reason
        run.handle.terminate()
        run.kill_at = now + self.settings.kill_grace_s

    def _heartbeat(self, now: float) -> None:
        self._last_beat = now
        jobs = {jid: {"progress": r.handle.progress()} for jid, r in self.running.items()}
        if jobs:
            self._renew(jobs)
        liveness.beat(self.db, SERVICE, self._started_at,
                      {"worker": self.id, "running": sorted(self.running),
                       "draining": self.draining, "max_jobs": self.settings.max_jobs})

    def _renew(self, jobs: dict[int, dict[str, Any]]) -> None:
        for job_id, reply in renew(self.db, worker=self.id, lease_s=self.settings.lease_s,
                                   jobs=jobs).items():
            run = self.running.get(job_id)
            if run is None:
                continue
            if not reply.held:
                log.warning("job %s: lease lost; stopping this attempt", job_id)
                self._stop(run, "lost", time.monotonic())
            elif reply.cancel_requested:
                self._stop(run, "cancel", time.monotonic())

    # -- how a job ends --------------------------------------------------------

    def _finish(self, run: Running, outcome: Outcome) -> None:
        job, reason = run.job, run.stop_reason
        try:
            with immediate(self.db):
                if outcome.ok:
                    states.succeed(self.db, job.id, worker=self.id, result=outcome.result)
                elif reason == "timeout":
                    states.fail(self.db, job.id, actor=self.id, owner=self.id,
                                error=f"timed out after {job.timeout_s:g}s")
                elif reason == "cancel":
                    states.mark_cancelled(self.db, job.id, actor=self.id, owner=self.id,
                                          reason="cancelled; its process group was stopped")
                elif reason == "shutdown":
                    states.release(self.db, job.id, worker=self.id,
                                   reason=f"handed back by {self.id} on shutdown")
                elif reason == "lost":
                    return
                else:
                    states.fail(self.db, job.id, actor=self.id, owner=self.id,
                                error=outcome.error or "failed")
        except (Conflict, NotFound) as exc:
            log.warning("job %s: not recorded as finished here: %s", job.id, exc)
            return
        log.info("job %s ended: %s", job.id, "succeeded" if outcome.ok else reason or "failed")

    # -- the loop --------------------------------------------------------------

    def run(self, should_stop: Callable[[], bool]) -> None:
        """Work until ``should_stop()``; then drain within a bounded time and return.

        The executor's start-up check runs first; when it fails, nothing is claimed.
        """
        check = getattr(self.executor, "check", None)
        if check is not None:
            try:
                check()
            except (ApplianceError, OSError):
                self.close()
                raise
        self._heartbeat(time.monotonic())
        sdnotify.notify("READY=1", f"STATUS=worker {self.id} taking jobs")
        watchdog = sdnotify.watchdog_interval()
        next_ping = 0.0
        deadline: float | None = None
        try:
            while True:
                now = time.monotonic()
                if watchdog is not None and now >= next_ping:
                    sdnotify.notify("WATCHDOG=1")
                    next_ping = now + watchdog
                if should_stop() and not self.draining:
                    self.draining = True
                    deadline = now + self.settings.shutdown_grace_s
                    sdnotify.notify("STOPPING=1")
                    log.info("stopping: %d job(s) running", len(self.running))
                if self.draining:
                    if not self.running:
                        break
                    if deadline is not None and now >= deadline:
                        for run in self.running.values():
                            self._stop(run, "shutdown", now)
                try:
                    busy = self.step()
                except StorageError as exc:
                    # A locked or briefly unwritable database: leases outlast this,
                    # so wait and try again rather than abandon the running jobs.
                    log.error("database error, retrying: %s", exc)
                    busy = False
                if not busy:
                    time.sleep(min(self.settings.poll_s, 0.05) if self.running
                               else self.settings.poll_s)
        finally:
            liveness.clear(self.db, SERVICE)
            self.close()

    def close(self) -> None:
        self.db.close()
