"""Per-minute roll-ups of the request log, so that a year of traffic fits on one disk.

``request_minutes`` holds, per model, version, route (``live`` or ``shadow``) and
minute, what the console and ``monitoring traffic`` show: request, row, error
and failure counts, latency sums and a quantile sketch, batch sizes and queue
time. Rows are merged into it by request id (``rollup_state.last_id``), so a
minute can be rolled up in several passes; raw ``requests`` rows are deleted
only once rolled up and older than ``monitoring.retention_days``.
"""

from __future__ import annotations

from appliance.storage.db import Database
from appliance.storage.migrations import Migration

DATABASE = "monitoring"


def _request_minutes(db: Database) -> None:
    db.execute(
        "CREATE TABLE request_minutes ("
        " model TEXT NOT NULL, version INTEGER NOT NULL,"
        " route TEXT NOT NULL,"  # live (primary, canary, explicit) or shadow
        " minute INTEGER NOT NULL,"  # Unix time // 60
        " requests INTEGER NOT NULL, rows INTEGER NOT NULL,"
        " client_errors INTEGER NOT NULL, failures INTEGER NOT NULL,"
        " ok INTEGER NOT NULL,"  # answered requests (status < 400): the sketch's count
        " latency_us_sum INTEGER NOT NULL, latency_us_max INTEGER NOT NULL,"
        " sketch TEXT NOT NULL,"  # JSON {bucket: count} of answered latencies (see rollup)
        " queue_us_sum INTEGER NOT NULL,"
        " batch_size_sum INTEGER NOT NULL, batch_size_max INTEGER NOT NULL,"
        " PRIMARY KEY (model, version, route, minute))"
    )
    db.execute("CREATE INDEX request_minutes_minute ON request_minutes (minute)")
    db.execute("CREATE TABLE rollup_state (key TEXT PRIMARY KEY, value INTEGER NOT NULL)")


MIGRATIONS = [Migration("monitoring.0011_request_minutes", _request_minutes)]
