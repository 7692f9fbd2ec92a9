"""Rows written straight into a table, as tests seed request logs."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from appliance.storage.db import Database, immediate


def insert_rows(db: Database, table: str, rows: Iterable[Mapping[str, Any]]) -> int:
    """Insert ``rows`` (column -> value; a column a row lacks is NULL) into ``table`` in
    one transaction; the number of rows."""
    rows = list(rows)
    columns = list(dict.fromkeys(c for row in rows for c in row))
    if not rows:
        return 0
    with immediate(db):
        db.conn.executemany(
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
            [[row.get(c) for c in columns] for row in rows])
    return len(rows)
