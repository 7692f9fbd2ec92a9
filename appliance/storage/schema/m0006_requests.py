"""The request log of monitoring.db: one row per inference the serving daemon answered.

Written in batches by the serving daemon's background writer, never on the
request path. ``minute`` (Unix time // 60) exists so that per-minute aggregates
per model and version are an index range scan rather than a date parse.
"""

from __future__ import annotations

from appliance.storage.db import Database
from appliance.storage.migrations import Migration

DATABASE = "monitoring"


def _requests(db: Database) -> None:
    db.execute(
        "CREATE TABLE requests ("
        " id INTEGER PRIMARY KEY,"
        " ts REAL NOT NULL,"  # Unix seconds, when it was answered (arrival: ts - latency)
        " minute INTEGER NOT NULL,"  # CAST(ts / 60 AS INTEGER)
        " model TEXT NOT NULL,"
        " version INTEGER NOT NULL,"
        " route TEXT NOT NULL,"  # primary, canary, shadow or explicit
        " request_id TEXT,"
        " status INTEGER NOT NULL,"  # HTTP status given to the client
        " latency_us INTEGER NOT NULL,"  # arrival to response, inside the server
        " queue_us INTEGER NOT NULL,"  # waiting for the batcher
        " batch_size INTEGER NOT NULL,"  # rows of the onnxruntime run it shared
        " rows INTEGER NOT NULL,"  # rows this request sent
        " error TEXT,"
        " inputs TEXT,"  # sampled: JSON {name: nested list}
        " outputs TEXT)"
    )
    db.execute("CREATE INDEX requests_model_minute ON requests (model, version, minute)")
    db.execute("CREATE INDEX requests_minute ON requests (minute)")
    db.execute("CREATE INDEX requests_request_id ON requests (request_id)")


MIGRATIONS = [Migration("requests.0001_log", _requests)]
