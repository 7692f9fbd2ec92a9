"""Evaluation sets of language models and the runs scored against them (``appliance.evals``).

An evaluation set's version is its JSONL file, stored as a blob under its sha256
(``digest``); the same bytes registered again give back the same version. A run keeps
its summary (per scorer: mean, pass rate) in ``summary`` and one row per case in
``eval_results``: the answer, tokens, latency and each scorer's score and reason.
"""

from __future__ import annotations

from appliance.storage.db import Database
from appliance.storage.migrations import Migration

DATABASE = "appliance"


def _evalsets(db: Database) -> None:
    db.execute(
        "CREATE TABLE evalsets ("
        " id INTEGER PRIMARY KEY,"
        " name TEXT NOT NULL UNIQUE,"
        " created_at TEXT NOT NULL, created_by TEXT NOT NULL)"
    )
    db.execute(
        "CREATE TABLE evalset_versions ("
        " id INTEGER PRIMARY KEY,"
        " evalset_id INTEGER NOT NULL REFERENCES evalsets(id),"
        " version INTEGER NOT NULL,"
        " digest TEXT NOT NULL,"  # sha256 of the JSONL file, its blob
        " cases INTEGER NOT NULL,"
        " scorers TEXT NOT NULL,"  # JSON: {scorer: cases using it}
        " size_bytes INTEGER NOT NULL,"
        " created_at TEXT NOT NULL, created_by TEXT NOT NULL,"
        " UNIQUE (evalset_id, version), UNIQUE (evalset_id, digest))"
    )


def _eval_runs(db: Database) -> None:
    db.execute(
        "CREATE TABLE eval_runs ("
        " id INTEGER PRIMARY KEY,"
        " evalset_version_id INTEGER NOT NULL REFERENCES evalset_versions(id),"
        " target TEXT NOT NULL,"  # as given: NAME@ALIAS, NAME@VERSION
        " model_version_id INTEGER NOT NULL REFERENCES model_versions(id),"
        " job_id INTEGER,"
        " params TEXT NOT NULL,"  # JSON: the run's generation parameters, its judge
        " device TEXT NOT NULL,"
        " duration_s REAL NOT NULL,"
        " summary TEXT NOT NULL,"  # JSON: see appliance.evals.results
        " created_at TEXT NOT NULL, created_by TEXT NOT NULL)"
    )
    db.execute(
        "CREATE TABLE eval_results ("
        " run_id INTEGER NOT NULL REFERENCES eval_runs(id),"
        " position INTEGER NOT NULL,"  # the case's line in the set
        " case_id TEXT NOT NULL,"
        " answer TEXT NOT NULL,"
        " prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL,"
        " latency_ms REAL NOT NULL,"
        " finish_reason TEXT,"
        " error TEXT,"
        " scores TEXT NOT NULL,"  # JSON: [{scorer, score, passed, reason}]
        " PRIMARY KEY (run_id, position))"
    )


MIGRATIONS = [Migration("evals.0001_sets", _evalsets), Migration("evals.0002_runs", _eval_runs)]
