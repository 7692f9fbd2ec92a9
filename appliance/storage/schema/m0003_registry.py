"""Tables of datasets, training runs and the model registry.

Dataset versions and model versions are immutable rows pointing at blobs;
aliases are the only thing that moves, and every move is a row of
``alias_history``, so "which version was production at time T" is one query.
"""

from __future__ import annotations

from appliance.storage.db import Database
from appliance.storage.migrations import Migration

DATABASE = "appliance"


def _datasets(db: Database) -> None:
    db.execute(
        "CREATE TABLE datasets ("
        " id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE,"
        " created_at TEXT NOT NULL, created_by TEXT NOT NULL)"
    )
    # One row per distinct (bytes, target): the same file registered twice is one version.
    db.execute(
        "CREATE TABLE dataset_versions ("
        " id INTEGER PRIMARY KEY,"
        " dataset_id INTEGER NOT NULL REFERENCES datasets(id),"
        " version INTEGER NOT NULL, digest TEXT NOT NULL, format TEXT NOT NULL,"
        " target TEXT NOT NULL DEFAULT '', schema TEXT NOT NULL, row_count INTEGER NOT NULL,"
        " size_bytes INTEGER NOT NULL, profile_digest TEXT NOT NULL,"
        " created_at TEXT NOT NULL, created_by TEXT NOT NULL,"
        " UNIQUE (dataset_id, version), UNIQUE (dataset_id, digest, target))"
    )


def _runs(db: Database) -> None:
    db.execute(
        "CREATE TABLE runs ("
        " id INTEGER PRIMARY KEY, status TEXT NOT NULL, model_name TEXT NOT NULL,"
        " recipe TEXT NOT NULL, code_hash TEXT NOT NULL,"
        " dataset_version_id INTEGER REFERENCES dataset_versions(id),"
        " dataset_digest TEXT NOT NULL, params TEXT NOT NULL DEFAULT '{}',"
        " metrics TEXT NOT NULL DEFAULT '{}', environment TEXT NOT NULL DEFAULT '{}',"
        " env_hash TEXT NOT NULL DEFAULT '', seed INTEGER NOT NULL, device TEXT NOT NULL,"
        " started_at TEXT NOT NULL, ended_at TEXT, log_digest TEXT, onnx_digest TEXT,"
        " weights_digest TEXT, error TEXT, actor TEXT NOT NULL)"
    )
    db.execute("CREATE INDEX runs_status ON runs (status, id)")


def _models(db: Database) -> None:
    db.execute(
        "CREATE TABLE models ("
        " id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, description TEXT NOT NULL DEFAULT '',"
        " created_at TEXT NOT NULL, created_by TEXT NOT NULL)"
    )
    db.execute(
        "CREATE TABLE model_versions ("
        " id INTEGER PRIMARY KEY, model_id INTEGER NOT NULL REFERENCES models(id),"
        " version INTEGER NOT NULL, onnx_digest TEXT NOT NULL, signature TEXT NOT NULL,"
        " profile_digest TEXT, run_id INTEGER REFERENCES runs(id),"
        " dataset_version_id INTEGER REFERENCES dataset_versions(id),"
        " metrics TEXT NOT NULL DEFAULT '{}', source TEXT NOT NULL,"
        " description TEXT NOT NULL DEFAULT '',"
        " created_at TEXT NOT NULL, created_by TEXT NOT NULL,"
        " UNIQUE (model_id, version))"
    )
    db.execute("CREATE INDEX model_versions_run ON model_versions (run_id)")


def _aliases(db: Database) -> None:
    db.execute(
        "CREATE TABLE aliases ("
        " model_id INTEGER NOT NULL REFERENCES models(id), alias TEXT NOT NULL,"
        " version_id INTEGER NOT NULL REFERENCES model_versions(id),"
        " set_at TEXT NOT NULL, set_by TEXT NOT NULL, PRIMARY KEY (model_id, alias))"
    )
    # Append-only: version_id NULL records an alias removed.
    db.execute(
        "CREATE TABLE alias_history ("
        " id INTEGER PRIMARY KEY AUTOINCREMENT,"
        " model_id INTEGER NOT NULL REFERENCES models(id), alias TEXT NOT NULL,"
        " version_id INTEGER REFERENCES model_versions(id),"
        " previous_version_id INTEGER REFERENCES model_versions(id),"
        " at TEXT NOT NULL, actor TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '')"
    )
    db.execute("CREATE INDEX alias_history_model ON alias_history (model_id, alias, at)")


def _tags(db: Database) -> None:
    db.execute(
        "CREATE TABLE model_version_tags ("
        " version_id INTEGER NOT NULL REFERENCES model_versions(id),"
        " key TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (version_id, key))"
    )


MIGRATIONS = [
    Migration("registry.0001_datasets", _datasets),
    Migration("registry.0002_runs", _runs),
    Migration("registry.0003_models", _models),
    Migration("registry.0004_aliases", _aliases),
    Migration("registry.0005_tags", _tags),
]
