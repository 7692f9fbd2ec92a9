"""Alerts: a breach found by a monitoring check, stored, audited and sent to syslog.

An alert's ``key`` is its model and kind. While an alert with that key is open
or acknowledged, the same breach found again only bumps its count and
last-seen time: a persisting condition is one alert, not one per check. When
a check evaluates the condition and finds it gone, the alert is resolved; a
later breach then raises a new one. Raising, acknowledging and resolving are
each written with their audit entry in one transaction.

New alerts also go to the local syslog socket (``/dev/log``) when it exists,
so a site's log collector sees them; nothing is ever sent over the network.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import stat
from dataclasses import dataclass
from typing import Any

from appliance import audit
from appliance.audit.log import now_iso
from appliance.errors import Conflict, NotFound
from appliance.storage.db import Database, immediate

KINDS = ("data_drift", "concept_drift", "performance", "quality", "latency", "errors")
SYSLOG_SOCKET = "/dev/log"
_log = logging.getLogger("appliance.alerts")


@dataclass(frozen=True)
class Alert:
    id: int
    model: str
    version: int | None
    kind: str
    state: str
    severity: str
    message: str
    details: dict[str, Any]
    first_seen: str
    last_seen: str
    count: int
    check_id: int | None
    acked_by: str | None
    acked_at: str | None
    resolved_at: str | None
    retrain_job_id: int | None

    @classmethod
    def from_row(cls, r: dict[str, Any]) -> Alert:
        return cls(r["id"], r["model"], r["version"], r["kind"], r["state"], r["severity"],
                   r["message"], json.loads(r["details"]), r["first_seen"], r["last_seen"],
                   r["count"], r["check_id"], r["acked_by"], r["acked_at"], r["resolved_at"],
                   r["retrain_job_id"])

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Breach:
    """What a check found wrong: becomes an alert, or refreshes the live one."""

    kind: str
    message: str
    details: dict[str, Any]
    severity: str = "warning"


def alert_key(model: str, kind: str) -> str:
    return f"{model}:{kind}"


def _live(db: Database, key: str) -> dict[str, Any] | None:
    rows = list(db.query("SELECT * FROM alerts WHERE key = ? AND state IN ('open',"
                         " 'acknowledged')", [key]))
    return rows[0] if rows else None


def record_breaches(db: Database, model: str, version: int | None,
                    breaches: list[Breach], evaluated: set[str], *, actor: str,
                    check_id: int | None = None) -> tuple[list[Alert], list[Alert]]:
    """Raise or refresh an alert per breach; resolve live alerts of kinds that were
    evaluated and found clear. Returns (new alerts, resolved alerts).

    Runs in its own write transaction, audit entries included.
    """
    new: list[Alert] = []
    resolved: list[Alert] = []
    now = now_iso()
    with immediate(db):
        for b in breaches:
            if b.kind not in KINDS:
                raise ValueError(f"unknown alert kind {b.kind!r}")
            key = alert_key(model, b.kind)
            live = _live(db, key)
            if live is not None:
                db.execute("UPDATE alerts SET last_seen = ?, count = count + 1, message = ?,"
                           " details = ?, check_id = ?, version = ? WHERE id = ?",
                           [now, b.message, json.dumps(b.details, default=str), check_id,
                            version, live["id"]])
                continue
            cur = db.execute(
                "INSERT INTO alerts (model, version, kind, key, state, severity, message,"
                " details, first_seen, last_seen, count, check_id)"
                " VALUES (?, ?, ?, ?, 'open', ?, ?, ?, ?, ?, 1, ?)",
                [model, version, b.kind, key, b.severity, b.message,
                 json.dumps(b.details, default=str), now, now, check_id])
            alert_id = int(cur.lastrowid or 0)
            audit.append(db, actor=actor, action="alert.raise", target=f"alert:{alert_id}",
                         details={"model": model, "version": version, "kind": b.kind,
                                  "message": b.message, "check": check_id})
            new.append(get_alert(db, alert_id))
        breached = {b.kind for b in breaches}
        for kind in sorted(evaluated - breached):
            live = _live(db, alert_key(model, kind))
            if live is None:
                continue
            db.execute("UPDATE alerts SET state = 'resolved', resolved_at = ? WHERE id = ?",
                       [now, live["id"]])
            audit.append(db, actor=actor, action="alert.resolve", target=f"alert:{live['id']}",
                         details={"model": model, "kind": kind, "check": check_id})
            resolved.append(get_alert(db, live["id"]))
    return new, resolved


def get_alert(db: Database, alert_id: int) -> Alert:
    rows = list(db.query("SELECT * FROM alerts WHERE id = ?", [alert_id]))
    if not rows:
        raise NotFound(f"alert {alert_id} does not exist; see 'appliance alerts --all'")
    return Alert.from_row(rows[0])


def list_alerts(db: Database, *, include_closed: bool = False,
                model: str | None = None, limit: int = 500) -> list[Alert]:
    """Live alerts (open and acknowledged) newest first; every alert with ``include_closed``."""
    sql = "SELECT * FROM alerts WHERE 1 = 1"
    args: list[Any] = []
    if not include_closed:
        sql += " AND state IN ('open', 'acknowledged')"
    if model is not None:
        sql += " AND model = ?"
        args.append(model)
    sql += " ORDER BY id DESC LIMIT ?"
    args.append(int(limit))
    return [Alert.from_row(r) for r in db.query(sql, args)]


def acknowledge(db: Database, alert_id: int, *, actor: str) -> Alert:
    """Mark an open alert as seen; it stays live (deduplicating) until its condition clears."""
    with immediate(db):
        alert = get_alert(db, alert_id)
        if alert.state != "open":
            raise Conflict(f"alert {alert_id} is {alert.state}; only an open alert can be "
                           "acknowledged")
        db.execute("UPDATE alerts SET state = 'acknowledged', acked_by = ?, acked_at = ?"
                   " WHERE id = ?", [actor, now_iso(), alert_id])
        audit.append(db, actor=actor, action="alert.acknowledge", target=f"alert:{alert_id}",
                     details={"model": alert.model, "kind": alert.kind})
        return get_alert(db, alert_id)


def _syslog_handler() -> logging.Handler | None:
    try:
        mode = os.stat(SYSLOG_SOCKET).st_mode
    except OSError:
        return None
    if not stat.S_ISSOCK(mode):
        return None
    try:
        handler = logging.handlers.SysLogHandler(
            address=SYSLOG_SOCKET, facility=logging.handlers.SysLogHandler.LOG_DAEMON)
    except OSError:
        return None
    handler.ident = "appliance: "
    return handler


def send_to_syslog(alerts: list[Alert]) -> int:
    """Write each alert as one syslog line (warning level); return how many were sent.

    Only the local Unix socket is used: with no ``/dev/log`` nothing is sent.
    """
    if not alerts:
        return 0
    handler = _syslog_handler()
    if handler is None:
        return 0
    try:
        for a in alerts:
            record = _log.makeRecord(
                _log.name, logging.WARNING, __file__, 0,
                "alert %d %s model=%s version=%s: %s",
                (a.id, a.kind, a.model, a.version, a.message), None)
            handler.handle(record)
    finally:
        handler.close()
    return len(alerts)
