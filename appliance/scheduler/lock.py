"""The scheduler's single-instance lock: a row with an owner and an expiry.

Only the holder fires schedules. The holder renews the lock well before it
expires; a scheduler that dies stops renewing, and another may take over
once the lock expires, or at once when the holder was on this host and its
process is gone. A holder that finds its lock taken (it stalled past the
expiry) must stop.
"""

from __future__ import annotations

import os
import socket
import time
import uuid

from appliance.audit.log import now_iso
from appliance.errors import Conflict
from appliance.storage.db import Database, immediate


def _process_gone(host: str, pid: int) -> bool:
    if host != socket.gethostname():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class SchedulerLock:
    def __init__(self, db: Database, lock_s: float, name: str = "scheduler") -> None:
        self.db = db
        self.lock_s = lock_s
        self.name = name
        self.owner = f"scheduler:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"

    def acquire(self, now: float | None = None) -> None:
        """Take the lock, or raise ``Conflict`` naming the scheduler that holds it."""
        now = time.time() if now is None else now
        with immediate(self.db):
            row = self.db.execute(
                "SELECT owner, host, pid, expires_at FROM scheduler_lock WHERE name = ?",
                [self.name],
            ).fetchone()
            if row is not None and row[0] != self.owner and row[3] > now \
                    and not _process_gone(row[1], row[2]):
                raise Conflict(
                    f"another scheduler is running (pid {row[2]} on {row[1]}); "
                    f"only one may run; its lock expires in {row[3] - now:.0f}s"
                )
            self.db.execute(
                "INSERT INTO scheduler_lock (name, owner, host, pid, acquired_at, expires_at)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET"
                " owner = excluded.owner, host = excluded.host, pid = excluded.pid,"
                " acquired_at = excluded.acquired_at, expires_at = excluded.expires_at",
                [self.name, self.owner, socket.gethostname(), os.getpid(), now_iso(),
                 now + self.lock_s],
            )

    def renew(self, now: float | None = None) -> bool:
        """Extend the lock; False when it is no longer ours."""
        now = time.time() if now is None else now
        with immediate(self.db):
            cur = self.db.execute(
                "UPDATE scheduler_lock SET expires_at = ? WHERE name = ? AND owner = ?",
                [now + self.lock_s, self.name, self.owner],
            )
            return cur.rowcount == 1

    def release(self) -> None:
        with immediate(self.db):
            self.db.execute("DELETE FROM scheduler_lock WHERE name = ? AND owner = ?",
                            [self.name, self.owner])
