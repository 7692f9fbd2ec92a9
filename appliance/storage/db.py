"""Opening the SQLite databases.

Opening sets the connection's pragmas (WAL, busy timeout, foreign keys,
synchronous, the WAL's size limit) and does nothing else: no table is created and no row written.
Schema changes are migrations, applied by ``appliance init``.

A ``Database`` is the open connection with the few helpers the services use:
``execute``, ``query`` (rows as dicts), ``table_names`` and a table's ``exists`` and
``columns``. Everything is SQL through the standard library's ``sqlite3``, so opening
a database costs no import beyond it (a listing command starts in a fraction of a second).

Transactions are explicit. ``immediate(db)`` takes the write lock up front
(``BEGIN IMMEDIATE``), for every change where a read decides a write: claiming
a job, moving an alias, appending an audit entry. The connection is in autocommit
mode, so a statement outside ``immediate`` commits on its own.
"""

from __future__ import annotations

import contextlib
import errno
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import quote

from appliance.errors import StorageError

#: What ``execute`` and ``query`` bind: positional values or named ones.
Params = Sequence[Any] | Mapping[str, Any]

APPLIANCE_DB = "appliance.db"
MONITORING_DB = "monitoring.db"
# After a checkpoint the WAL is cut back to this size instead of keeping the size of the
# largest write it ever held (a bulk load left it at hundreds of MB until a clean stop).
JOURNAL_SIZE_LIMIT = 64 * 1024 * 1024


def storage_error(path: Path, exc: BaseException) -> StorageError:
    text = str(exc)
    if isinstance(exc, sqlite3.DatabaseError) and (
        "not a database" in text or "malformed" in text or "encrypted" in text
    ):
        return StorageError(
            f"{path} is not a usable appliance database ({text}); restore it with "
            "'appliance restore BACKUP' or move it aside and run 'appliance init'"
        )
    if "readonly" in text or "read-only" in text or getattr(exc, "errno", None) == errno.EROFS:
        return StorageError(
            f"{path} is read-only; give the appliance user write access or choose --home"
        )
    if "unable to open" in text:
        return StorageError(
            f"can not open {path}: {text}; run 'appliance init' or check the data directory"
        )
    return StorageError(f"database {path}: {text}")


class Column(NamedTuple):
    """One row of ``PRAGMA table_info``."""

    cid: int
    name: str
    type: str
    notnull: bool
    default_value: Any
    is_pk: int


class Table:
    """A table of a ``Database``, by name: whether it exists and its columns."""

    def __init__(self, db: Database, name: str) -> None:
        self.db = db
        self.name = name

    def exists(self) -> bool:
        return self.name in self.db.table_names()

    @property
    def columns(self) -> list[Column]:
        rows = self.db.execute("SELECT * FROM pragma_table_info(?)", [self.name]).fetchall()
        return [Column(cid, name, type_, bool(notnull), default, pk)
                for cid, name, type_, notnull, default, pk in rows]

    @property
    def columns_dict(self) -> dict[str, str]:
        """Column name -> its declared type (``TEXT``, ``INTEGER``, ...)."""
        return {column.name: column.type for column in self.columns}


class Database:
    """An open SQLite connection (``conn``), as ``connect()`` returns it."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def execute(self, sql: str, parameters: Params | None = None) -> sqlite3.Cursor:
        if parameters is None:
            return self.conn.execute(sql)
        return self.conn.execute(sql, parameters)

    def query(self, sql: str, params: Params | None = None) -> Iterator[dict[str, Any]]:
        """The rows of ``sql`` as dicts, column name -> value (run when first iterated)."""
        cursor = self.execute(sql, params)
        keys = [d[0] for d in cursor.description or ()]
        for row in cursor:
            yield dict(zip(keys, row, strict=True))

    def table_names(self) -> list[str]:
        return [r[0] for r in self.conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY rowid")]

    def __getitem__(self, name: str) -> Table:
        return Table(self, name)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def uri(path: str | Path, mode: str) -> str:
    """A ``file:`` URI for ``path``: '#', '?' and '%' in a directory name are escaped, so
    SQLite opens exactly this file and honours ``mode``."""
    return f"file:{quote(str(path))}?mode={mode}"


def connect(
    path: str | Path,
    *,
    create: bool = False,
    busy_timeout_ms: int = 5000,
    synchronous: str = "full",
    journal_size_limit: int = JOURNAL_SIZE_LIMIT,
) -> Database:
    """Open a database file with the appliance's pragmas.

    Without ``create`` the file must already exist (``appliance init`` makes
    it), so a typo in --home is an error rather than a fresh empty database.
    """
    path = Path(path)
    if synchronous not in ("full", "normal"):
        raise ValueError(f"synchronous must be 'full' or 'normal', not {synchronous!r}")
    mode = "rwc" if create else "rw"
    try:
        conn = sqlite3.connect(
            uri(path, mode),
            uri=True,
            timeout=busy_timeout_ms / 1000,
            isolation_level=None,
            check_same_thread=False,
        )
    except sqlite3.OperationalError as exc:
        raise storage_error(path, exc) from exc
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        mode_row = conn.execute("PRAGMA journal_mode = WAL").fetchone()
        if mode_row is None or str(mode_row[0]).lower() != "wal":
            raise StorageError(f"{path}: could not switch the database to WAL mode")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute(f"PRAGMA synchronous = {synchronous.upper()}")
        conn.execute(f"PRAGMA journal_size_limit = {int(journal_size_limit)}")
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise storage_error(path, exc) from exc
    return Database(conn)


@contextlib.contextmanager
def immediate(db: Database) -> Iterator[Database]:
    """A write transaction that holds the write lock from its first statement.

    Everything inside commits together or not at all. Nesting is refused:
    a service function that needs a transaction takes the caller's.
    """
    if db.conn.in_transaction:
        raise RuntimeError("immediate() called inside an open transaction")
    try:
        db.conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        raise StorageError(f"database is busy or unwritable: {exc}") from exc
    try:
        yield db
    except BaseException:
        if db.conn.in_transaction:
            db.conn.execute("ROLLBACK")
        raise
    try:
        db.conn.execute("COMMIT")
    except sqlite3.DatabaseError as exc:
        if db.conn.in_transaction:
            db.conn.execute("ROLLBACK")
        raise StorageError(f"commit failed: {exc}") from exc


def integrity_check(db: Database) -> list[str]:
    """``PRAGMA integrity_check``: an empty list means the file is sound."""
    rows = [r[0] for r in db.conn.execute("PRAGMA integrity_check").fetchall()]
    return [] if rows == ["ok"] else rows
