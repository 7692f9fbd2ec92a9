"""An index of the request rows that kept their inputs, by model, version and minute.

A page that shows a model's newest kept inputs reads them through it, newest first, and
stops at its limit, however few of the window's rows kept their inputs (beyond
serving.log_rows_per_second only a sample does) and however many rows the window holds.
"""

from __future__ import annotations

from appliance.storage.db import Database
from appliance.storage.migrations import Migration

DATABASE = "monitoring"


def _kept_index(db: Database) -> None:
    db.execute("CREATE INDEX requests_kept ON requests (model, version, minute)"
               " WHERE inputs IS NOT NULL")


MIGRATIONS = [Migration("monitoring.0020_requests_kept_index", _kept_index)]
