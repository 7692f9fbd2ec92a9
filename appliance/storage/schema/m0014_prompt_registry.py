"""The prompt registry (``appliance.prompts``): prompts, immutable versions, aliases.

A version's ``spec`` is the canonical JSON of its checked content and ``digest`` its
sha256, unique per prompt, so the same content registered again is the same version.
Aliases move; every move is a row of ``prompt_alias_history`` written with its audit
entry, so "which version answered at time T" is one query, as for models.
"""

from __future__ import annotations

from appliance.storage.db import Database
from appliance.storage.migrations import Migration

DATABASE = "appliance"


def _prompts(db: Database) -> None:
    db.execute(
        "CREATE TABLE prompts ("
        " id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE,"
        " created_at TEXT NOT NULL, created_by TEXT NOT NULL)"
    )
    db.execute(
        "CREATE TABLE prompt_versions ("
        " id INTEGER PRIMARY KEY, prompt_id INTEGER NOT NULL REFERENCES prompts(id),"
        " version INTEGER NOT NULL, digest TEXT NOT NULL, spec TEXT NOT NULL,"
        " model TEXT NOT NULL, description TEXT NOT NULL DEFAULT '',"
        " created_at TEXT NOT NULL, created_by TEXT NOT NULL,"
        " UNIQUE (prompt_id, version), UNIQUE (prompt_id, digest))"
    )


def _prompt_aliases(db: Database) -> None:
    db.execute(
        "CREATE TABLE prompt_aliases ("
        " prompt_id INTEGER NOT NULL REFERENCES prompts(id), alias TEXT NOT NULL,"
        " version_id INTEGER NOT NULL REFERENCES prompt_versions(id),"
        " set_at TEXT NOT NULL, set_by TEXT NOT NULL, PRIMARY KEY (prompt_id, alias))"
    )
    db.execute(
        "CREATE TABLE prompt_alias_history ("
        " id INTEGER PRIMARY KEY AUTOINCREMENT,"
        " prompt_id INTEGER NOT NULL REFERENCES prompts(id), alias TEXT NOT NULL,"
        " version_id INTEGER REFERENCES prompt_versions(id),"
        " previous_version_id INTEGER REFERENCES prompt_versions(id),"
        " at TEXT NOT NULL, actor TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '')"
    )
    db.execute("CREATE INDEX prompt_alias_history_prompt"
               " ON prompt_alias_history (prompt_id, alias, at)")


MIGRATIONS = [
    Migration("prompts.0001_prompts", _prompts),
    Migration("prompts.0002_aliases", _prompt_aliases),
]
