"""Capacity profiles, one row per sweep of a model version (``appliance.capacity``).

``profile`` is the sweep's JSON: its settings, the device, and one entry per point
(throughput, latency split into queue and compute time, memory, activity).
"""

from __future__ import annotations

from appliance.storage.db import Database
from appliance.storage.migrations import Migration

DATABASE = "appliance"


def _capacity_profiles(db: Database) -> None:
    db.execute(
        "CREATE TABLE capacity_profiles ("
        " id INTEGER PRIMARY KEY,"
        " version_id INTEGER NOT NULL REFERENCES model_versions(id),"
        " kind TEXT NOT NULL,"  # tabular or llm
        " device TEXT NOT NULL,"  # cuda or cpu
        " job_id INTEGER,"
        " created_at TEXT NOT NULL, created_by TEXT NOT NULL,"
        " profile TEXT NOT NULL)"
    )
    db.execute("CREATE INDEX capacity_profiles_version ON capacity_profiles (version_id, id)")


MIGRATIONS = [Migration("capacity.0001_profiles", _capacity_profiles)]
