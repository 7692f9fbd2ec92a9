"""The scheduler daemon: APScheduler wakes it at each schedule's cron times.

APScheduler is the alarm clock; the database decides (see ``schedules``).
On start the daemon takes the single-instance lock, fires once for every
schedule that missed runs while no scheduler was up (coalesced), and adds one
APScheduler job per enabled schedule. A housekeeping job renews the lock,
writes the heartbeat and, when the schedules table changed, reloads the
APScheduler jobs. All database work runs on APScheduler's single executor
thread, one thing at a time, on one connection. Every
``monitoring.retention_interval_minutes`` it also rolls the request log up and prunes it
(``appliance.monitoring.rollup``), on its own connection to monitoring.db.
"""

from __future__ import annotations

import logging
import sqlite3
from datetime import UTC, datetime

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from appliance.audit.log import now_iso
from appliance.config import Config
from appliance.errors import ApplianceError, BadInput
from appliance.monitoring.rollup import run_retention
from appliance.queue import liveness
from appliance.scheduler import schedules
from appliance.scheduler.cron import parse_cron
from appliance.scheduler.lock import SchedulerLock
from appliance.storage.db import Database
from appliance.storage.home import Home

log = logging.getLogger("appliance.scheduler")
SERVICE = "scheduler"
HOUSEKEEPING = "housekeeping"
RETENTION = "retention"


class SchedulerDaemon:
    def __init__(self, home: Home, config: Config) -> None:
        self.config = config
        self.home = home
        self.db: Database = home.db()
        self.lock = SchedulerLock(self.db, config["scheduler.lock_s"])
        self.sync_s = min(config["scheduler.sync_s"], config["scheduler.lock_s"] / 3)
        self.lost_lock = False
        self._token = ""
        self._started_at = now_iso()
        self._aps = BackgroundScheduler(
            timezone=UTC,
            executors={"default": ThreadPoolExecutor(max_workers=1)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
        )

    def start(self) -> None:
        """Take the lock (``Conflict`` if another scheduler holds it), catch up, start."""
        self.lock.acquire()
        fired = schedules.fire_due(self.db, self.config, actor=self.lock.owner)
        if fired:
            log.info("caught up on missed runs: queued jobs %s", fired)
        self._reload()
        self._aps.add_job(self._housekeeping, IntervalTrigger(seconds=self.sync_s),
                          id=HOUSEKEEPING)
        every = float(self.config["monitoring.retention_interval_minutes"])
        if every > 0:
            self._aps.add_job(self._retention, IntervalTrigger(seconds=every * 60.0),
                              id=RETENTION, next_run_time=datetime.now(UTC))
        liveness.beat(self.db, SERVICE, self._started_at, {"owner": self.lock.owner})
        self._aps.start()

    def _reload(self) -> None:
        token = schedules.changes_token(self.db)
        for job in self._aps.get_jobs():
            if job.id not in (HOUSEKEEPING, RETENTION):
                job.remove()
        active = [s for s in schedules.list_schedules(self.db) if s.enabled]
        loaded = 0
        for s in active:
            try:
                trigger = parse_cron(s.cron, s.timezone)
            except BadInput as exc:  # one bad schedule must not keep the others from running
                log.error("schedule %s (%s) not loaded: %s", s.id, s.name, exc)
                continue
            self._aps.add_job(self._fire, trigger, args=[s.id], id=f"schedule:{s.id}",
                              name=s.name)
            loaded += 1
        self._token = token
        log.info("loaded %d of %d active schedule(s)", loaded, len(active))

    def _fire(self, schedule_id: int) -> None:
        if self.lost_lock:
            return
        try:
            for job_id in schedules.fire_due(self.db, self.config, actor=self.lock.owner,
                                             only=schedule_id, now=datetime.now(UTC)):
                log.info("schedule %s queued job %s", schedule_id, job_id)
        except ApplianceError as exc:
            log.error("schedule %s could not fire: %s", schedule_id, exc)

    def _retention(self) -> None:
        if self.lost_lock:
            return
        try:
            with self.home.monitoring_db() as mon:
                report = run_retention(mon, self.config)
        except (ApplianceError, sqlite3.Error) as exc:
            log.error("request-log retention failed: %s", exc)
            return
        if report.rolled_rows or report.deleted_rows or report.emptied_inputs:
            log.info("request log: rolled up %d rows, deleted %d, emptied inputs of %d "
                     "(%.1f s)", report.rolled_rows, report.deleted_rows,
                     report.emptied_inputs, report.seconds)

    def _housekeeping(self) -> None:
        try:
            if not self.lock.renew():
                log.error("the scheduler lock was taken over; stopping")
                self.lost_lock = True
                return
            liveness.beat(self.db, SERVICE, self._started_at, {"owner": self.lock.owner})
            if schedules.changes_token(self.db) != self._token:
                self._reload()
        except ApplianceError as exc:
            log.error("housekeeping failed: %s", exc)

    def stop(self) -> None:
        """Wait for a firing in progress, then give up the lock and the heartbeat."""
        if self._aps.running:
            self._aps.shutdown(wait=True)
        try:
            if not self.lost_lock:
                self.lock.release()
            liveness.clear(self.db, SERVICE)
        finally:
            self.db.close()
