"""When each schedule fires next, kept with it.

``next_fire_at`` is the schedule's first cron time strictly after its
``last_checked_at``, written whenever either changes (added, resumed, fired). Listing
schedules reads it rather than evaluating every cron expression, which needs the cron
library; it is computed afresh when it has passed (no scheduler ran at that time) or is
NULL (paused, or a row written before the column existed).
"""

from __future__ import annotations

from appliance.storage.db import Database
from appliance.storage.migrations import Migration

DATABASE = "appliance"


def _next_fire(db: Database) -> None:
    db.execute("ALTER TABLE schedules ADD COLUMN next_fire_at TEXT")


MIGRATIONS = [Migration("queue.0004_schedule_next_fire", _next_fire)]
