"""How much of the traffic a request row with kept inputs stands for.

The request log keeps every request's inputs and outputs up to
``serving.log_rows_per_second`` and a uniform sample beyond it; ``weight`` is 1 / the
chance the row had of being kept (1 for a row kept in full). Drift, quality and
performance weigh kept rows by it. NULL on rows without inputs, and on rows written
before the column existed, which were a uniform sample and read as 1.
"""

from __future__ import annotations

from appliance.storage.db import Database
from appliance.storage.migrations import Migration

DATABASE = "monitoring"


def _weight(db: Database) -> None:
    db.execute("ALTER TABLE requests ADD COLUMN weight REAL")


MIGRATIONS = [Migration("monitoring.0018_request_weight", _weight)]
