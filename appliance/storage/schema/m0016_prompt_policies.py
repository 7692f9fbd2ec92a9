"""Promotion policies of prompts (``appliance.promotion.prompt_gates``): one per prompt,
its YAML as given (``source``) and as checked (``policy``, JSON)."""

from __future__ import annotations

from appliance.storage.db import Database
from appliance.storage.migrations import Migration

DATABASE = "appliance"


def _prompt_policies(db: Database) -> None:
    db.execute(
        "CREATE TABLE prompt_policies ("
        " prompt_id INTEGER PRIMARY KEY REFERENCES prompts(id),"
        " source TEXT NOT NULL, policy TEXT NOT NULL,"
        " set_at TEXT NOT NULL, set_by TEXT NOT NULL)"
    )


MIGRATIONS = [Migration("prompts.0003_policies", _prompt_policies)]
