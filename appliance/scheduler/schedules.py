"""Schedules: a cron expression and a job template, stored in the database.

The database, not the scheduler's memory, decides whether a run is due: each
schedule remembers up to when it was last checked (``last_checked_at``), and
firing reads that, queues the job and moves it forward in one ``BEGIN
IMMEDIATE`` transaction. So a restarted scheduler, or two fire attempts for
the same moment, can never queue a run twice, and runs missed while no
scheduler was up are coalesced into one (the latest). A unique index on
(schedule, fire time) in the jobs table backs this up.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from appliance.audit import append
from appliance.audit.log import now_iso
from appliance.config import Config
from appliance.errors import BadInput, Conflict, NotFound
from appliance.jobs import KINDS
from appliance.queue.jobs import JobSpec, check_spec, insert_job
from appliance.scheduler.cron import next_after, parse_cron
from appliance.storage.db import Database, immediate

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MAX_MISSED = 1000  # how many missed fire times a catch-up counts before it stops counting

log = logging.getLogger("appliance.scheduler")


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace(
        "+00:00", "Z")


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Schedule:
    id: int
    name: str
    cron: str
    timezone: str
    template: dict[str, Any]
    enabled: bool
    created_by: str
    created_at: str
    updated_at: str
    last_checked_at: str
    last_fired_at: str | None
    last_job_id: int | None
    stored_next: str | None = None  # the first cron time after last_checked_at, if kept

    @classmethod
    def from_row(cls, r: Mapping[str, Any]) -> Schedule:
        return cls(
            id=r["id"], name=r["name"], cron=r["cron"], timezone=r["timezone"],
            template=json.loads(r["template"]), enabled=bool(r["enabled"]),
            created_by=r["created_by"], created_at=r["created_at"], updated_at=r["updated_at"],
            last_checked_at=r["last_checked_at"], last_fired_at=r["last_fired_at"],
            last_job_id=r["last_job_id"],
            stored_next=r["next_fire_at"] if "next_fire_at" in r.keys() else None,
        )

    def next_fire(self, after: datetime | None = None) -> datetime | None:
        """When it fires next (None while paused)."""
        if not self.enabled:
            return None
        start = max(after or utcnow(), _parse(self.last_checked_at))
        if self.stored_next is not None:
            # The first time after last_checked_at, and later than start: no time lies
            # between them, so it is the next one, read without the cron library.
            stored = _parse(self.stored_next)
            if stored > start:
                return stored
        return next_after(parse_cron(self.cron, self.timezone), start)

    def as_dict(self) -> dict[str, Any]:
        nxt = self.next_fire()
        return {
            "id": self.id, "name": self.name, "cron": self.cron, "timezone": self.timezone,
            "template": self.template, "enabled": self.enabled, "created_by": self.created_by,
            "created_at": self.created_at, "updated_at": self.updated_at,
            "last_fired_at": self.last_fired_at, "last_job_id": self.last_job_id,
            "next_fire_at": _iso(nxt) if nxt else None,
        }


def _next_after_check(cron: str, timezone_name: str, checked: str) -> str | None:
    """What ``next_fire_at`` keeps: the first cron time after ``checked``."""
    fire = next_after(parse_cron(cron, timezone_name), _parse(checked))
    return _iso(fire) if fire else None


def _target(name: str) -> str:
    return f"schedule:{name}"


def add_schedule(
    db: Database,
    config: Config,
    *,
    name: str,
    cron: str,
    spec: JobSpec,
    actor: str,
    timezone_name: str = "UTC",
    now: datetime | None = None,
) -> Schedule:
    """Store a schedule; it first fires at its next cron time after ``now``."""
    if not NAME.match(name or ""):
        raise BadInput(
            f"schedule name {name!r}: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    parse_cron(cron, timezone_name)
    check_spec(spec, config, kinds=KINDS)
    stamp = _iso(now or utcnow())
    with immediate(db):
        if db.execute("SELECT 1 FROM schedules WHERE name = ?", [name]).fetchone():
            raise Conflict(f"schedule {name!r} already exists; remove it first or pick a name")
        db.execute(
            "INSERT INTO schedules (name, cron, timezone, template, enabled, created_by,"
            " created_at, updated_at, last_checked_at, next_fire_at)"
            " VALUES (?, ?, ?, ?, 1, ?, ?, ?, ?, ?)",
            [name, cron, timezone_name, json.dumps(spec.as_template()), actor, stamp, stamp,
             stamp, _next_after_check(cron, timezone_name, stamp)],
        )
        append(db, actor=actor, action="schedule.added", target=_target(name),
               details={"cron": cron, "timezone": timezone_name, "template": spec.as_template()})
    return get_schedule(db, name)


def get_schedule(db: Database, name: str) -> Schedule:
    rows = list(db.query("SELECT * FROM schedules WHERE name = ?", [name]))
    if not rows:
        raise NotFound(f"schedule {name!r} does not exist; see 'appliance schedules list'")
    return Schedule.from_row(rows[0])


def list_schedules(db: Database) -> list[Schedule]:
    return [Schedule.from_row(r) for r in db.query("SELECT * FROM schedules ORDER BY name")]


def remove_schedule(db: Database, name: str, *, actor: str) -> None:
    """Delete a schedule; jobs it already queued stay."""
    with immediate(db):
        schedule = get_schedule(db, name)
        db.execute("DELETE FROM schedules WHERE id = ?", [schedule.id])
        append(db, actor=actor, action="schedule.removed", target=_target(name),
               details={"cron": schedule.cron})


def set_enabled(db: Database, name: str, enabled: bool, *, actor: str,
                now: datetime | None = None) -> Schedule:
    """Pause or resume. Resuming starts from now: runs missed while paused are skipped."""
    stamp = _iso(now or utcnow())
    with immediate(db):
        schedule = get_schedule(db, name)
        if schedule.enabled == enabled:
            raise Conflict(f"schedule {name!r} is already {'active' if enabled else 'paused'}")
        db.execute(
            "UPDATE schedules SET enabled = ?, updated_at = ?,"
            " last_checked_at = CASE WHEN ? THEN ? ELSE last_checked_at END,"
            " next_fire_at = ? WHERE id = ?",
            [int(enabled), stamp, int(enabled), stamp,
             _next_after_check(schedule.cron, schedule.timezone, stamp) if enabled else None,
             schedule.id],
        )
        append(db, actor=actor, action="schedule.resumed" if enabled else "schedule.paused",
               target=_target(name))
    return get_schedule(db, name)


def changes_token(db: Database) -> str:
    """Changes whenever a schedule is added, removed, paused or resumed."""
    row = db.execute(
        "SELECT COUNT(*), COALESCE(MAX(id), 0), COALESCE(MAX(updated_at), '') FROM schedules"
    ).fetchone()
    return f"{row[0]}:{row[1]}:{row[2]}"


def _due(schedule: Schedule, now: datetime) -> tuple[datetime, int] | None:
    """The latest fire time in (last_checked_at, now] and how many there were, if any."""
    trigger = parse_cron(schedule.cron, schedule.timezone)
    fire = next_after(trigger, _parse(schedule.last_checked_at))
    if fire is None or fire > now:
        return None
    latest, count = fire, 1
    while count < MAX_MISSED:
        nxt = next_after(trigger, latest)
        if nxt is None or nxt > now:
            break
        latest, count = nxt, count + 1
    return latest, count


def fire_due(
    db: Database,
    config: Config,
    *,
    now: datetime | None = None,
    actor: str = "system:scheduler",
    only: int | None = None,
) -> list[int]:
    """Queue one job for each enabled schedule that is due at ``now``; return the job ids."""
    now = now or utcnow()
    fired: list[int] = []
    for schedule in list_schedules(db):
        if not schedule.enabled or (only is not None and schedule.id != only):
            continue
        try:
            if _due(schedule, now) is None:
                continue
        except BadInput as exc:  # an unreadable row must not hold up the other schedules
            log.error("schedule %s (%s) skipped: %s", schedule.id, schedule.name, exc)
            continue
        with immediate(db):
            rows = list(db.query("SELECT * FROM schedules WHERE id = ?", [schedule.id]))
            if not rows or not rows[0]["enabled"]:
                continue
            current = Schedule.from_row(rows[0])
            due = _due(current, now)  # re-read under the write lock: another may have fired
            if due is None:
                continue
            fire_time, missed = due
            try:
                job_id = insert_job(
                    db, JobSpec.from_template(current.template), config, kinds=KINDS, actor=actor,
                    schedule_id=current.id, fire_time=_iso(fire_time),
                )
            except BadInput as exc:
                # The template no longer makes a valid job (a kind was removed, say):
                # record why and move on, rather than retrying every tick.
                db.execute("UPDATE schedules SET last_checked_at = ?, next_fire_at = ?"
                           " WHERE id = ?",
                           [_iso(now), _next_after_check(current.cron, current.timezone,
                                                         _iso(now)), current.id])
                append(db, actor=actor, action="schedule.fire_failed",
                       target=_target(current.name),
                       details={"fire_time": _iso(fire_time), "error": str(exc)})
                continue
            db.execute(
                "UPDATE schedules SET last_checked_at = ?, last_fired_at = ?, last_job_id = ?,"
                " next_fire_at = ? WHERE id = ?",
                [_iso(now), _iso(fire_time), job_id,
                 _next_after_check(current.cron, current.timezone, _iso(now)), current.id],
            )
            append(db, actor=actor, action="schedule.fired", target=_target(current.name),
                   details={"job_id": job_id, "fire_time": _iso(fire_time),
                            "coalesced": missed, "checked_at": now_iso()})
            fired.append(job_id)
    return fired
