"""Named, recorded schema migrations.

Each module in ``appliance.storage.schema`` declares which database it
belongs to (``DATABASE``) and an ordered ``MIGRATIONS`` list. Modules apply
in the order of their names (``m0001_core`` before ``m0002_...``), then in
list order. Every migration runs in its own transaction together with the row
in ``_migrations`` that records it, so a migration is applied once, fully, or
not at all; applying again is a no-op.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from appliance.storage import schema
from appliance.storage.db import Database, immediate

MigrationFn = Callable[[Database], None]


@dataclass(frozen=True)
class Migration:
    name: str
    apply: MigrationFn


def all_migrations(database: str) -> list[Migration]:
    """Every migration for ``database`` ('appliance' or 'monitoring'), in order."""
    found: list[Migration] = []
    for info in sorted(pkgutil.iter_modules(schema.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{schema.__name__}.{info.name}")
        if getattr(module, "DATABASE", None) == database:
            found.extend(module.MIGRATIONS)
    names = [m.name for m in found]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise RuntimeError(f"duplicate migration names: {sorted(dupes)}")
    return found


def _ensure_table(db: Database) -> None:
    db.execute(
        "CREATE TABLE IF NOT EXISTS _migrations ("
        " name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)"
    )


def applied(db: Database) -> list[str]:
    if not db["_migrations"].exists():
        return []
    return [r["name"] for r in db.query("SELECT name FROM _migrations ORDER BY rowid")]


def pending(db: Database, database: str) -> list[str]:
    done = set(applied(db))
    return [m.name for m in all_migrations(database) if m.name not in done]


def migrate(db: Database, database: str) -> list[str]:
    """Apply what is pending; return the names applied now."""
    _ensure_table(db)
    ran: list[str] = []
    for migration in all_migrations(database):
        with immediate(db):
            row = db.execute(
                "SELECT 1 FROM _migrations WHERE name = ?", [migration.name]
            ).fetchone()
            if row:
                continue
            migration.apply(db)
            db.execute(
                "INSERT INTO _migrations (name, applied_at) VALUES (?, ?)",
                [migration.name, datetime.now(UTC).isoformat()],
            )
        ran.append(migration.name)
    return ran
