"""What a training run logs beside its summary: metrics per step, and its artifacts.

``run_metrics`` holds one row per (run, step, name): the loss curve of a template,
or each ``{"step": N, "name": value}`` line a training script wrote. ``run_artifacts``
lists the files a script left under ``artifacts/``, each stored as a blob.
``sweeps`` records a grid sweep; each of its runs carries ``sweep_id``.
"""

from __future__ import annotations

from appliance.storage.db import Database
from appliance.storage.migrations import Migration

DATABASE = "appliance"


def _run_metrics(db: Database) -> None:
    db.execute(
        "CREATE TABLE run_metrics ("
        " run_id INTEGER NOT NULL REFERENCES runs(id),"
        " step INTEGER NOT NULL, name TEXT NOT NULL, value REAL,"
        " PRIMARY KEY (run_id, name, step))"
    )


def _run_artifacts(db: Database) -> None:
    db.execute(
        "CREATE TABLE run_artifacts ("
        " run_id INTEGER NOT NULL REFERENCES runs(id),"
        " path TEXT NOT NULL, digest TEXT NOT NULL, size_bytes INTEGER NOT NULL,"
        " PRIMARY KEY (run_id, path))"
    )


def _sweeps(db: Database) -> None:
    # A grid sweep: one train job per point, each a normal run that names its sweep.
    db.execute(
        "CREATE TABLE sweeps ("
        " id INTEGER PRIMARY KEY, model_name TEXT NOT NULL, recipe_path TEXT NOT NULL,"
        " grid TEXT NOT NULL, points INTEGER NOT NULL, jobs TEXT NOT NULL,"
        " created_at TEXT NOT NULL, created_by TEXT NOT NULL)"
    )
    db.execute("ALTER TABLE runs ADD COLUMN sweep_id INTEGER REFERENCES sweeps(id)")
    db.execute("CREATE INDEX runs_sweep ON runs (sweep_id, id)")


MIGRATIONS = [
    Migration("runs.0001_run_metrics", _run_metrics),
    Migration("runs.0002_run_artifacts", _run_artifacts),
    Migration("runs.0003_sweeps", _sweeps),
]
