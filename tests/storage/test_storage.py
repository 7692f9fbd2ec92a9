"""Storage: opening the database, migrations, the blob store and the data directory."""

from __future__ import annotations

import errno
import hashlib
import os
import sqlite3
import stat
from pathlib import Path

import pytest

from appliance.errors import BadInput, NotFound, OperationFailed, StorageError
from appliance.storage import db as dbmod
from appliance.storage import migrations
from appliance.storage.blobs import BlobStore
from appliance.storage.home import Home, init_home


def test_connect_sets_pragmas_and_creates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    db = dbmod.connect(path, create=True, busy_timeout_ms=1234)
    conn = db.conn
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 1234
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert db.table_names() == []
    db.close()


def test_the_wal_is_cut_back_to_its_limit_after_a_large_write(tmp_path: Path) -> None:
    path = tmp_path / "big.db"
    limit = 256 * 1024
    db = dbmod.connect(path, create=True, journal_size_limit=limit)
    assert db.execute("PRAGMA journal_size_limit").fetchone()[0] == limit
    assert dbmod.connect(tmp_path / "d.db", create=True).execute(
        "PRAGMA journal_size_limit").fetchone()[0] == dbmod.JOURNAL_SIZE_LIMIT
    wal = Path(f"{path}-wal")
    db.execute("CREATE TABLE t (x BLOB)")
    with dbmod.immediate(db):
        for _ in range(40):
            db.execute("INSERT INTO t VALUES (?)", [os.urandom(64 * 1024)])
    assert wal.stat().st_size > 4 * limit
    db.execute("PRAGMA wal_checkpoint(PASSIVE)")
    with dbmod.immediate(db):  # the next write starts the WAL over and truncates it
        db.execute("INSERT INTO t VALUES (x'00')")
    assert wal.stat().st_size <= limit
    db.close()


def test_connect_without_create_refuses_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="x.db"):
        dbmod.connect(tmp_path / "x.db")
    assert not (tmp_path / "x.db").exists()


def test_foreign_file_is_named_with_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "appliance.db"
    path.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(StorageError) as err:
        dbmod.connect(path)
    assert str(path) in str(err.value) and "appliance restore" in str(err.value)


def test_immediate_commits_together_or_not_at_all(db) -> None:
    with dbmod.immediate(db):
        db.execute("INSERT INTO meta (key, value) VALUES ('a', '1')")
    with pytest.raises(ZeroDivisionError):
        with dbmod.immediate(db):
            db.execute("INSERT INTO meta (key, value) VALUES ('b', '2')")
            db.execute("INSERT INTO meta (key, value) VALUES (?, ?)", ["c", "3"])
            raise ZeroDivisionError
    assert [r["key"] for r in db.query("SELECT key FROM meta ORDER BY key")] == ["a"]


def test_a_database_reads_rows_as_dicts_and_knows_its_tables(home: Home) -> None:
    with dbmod.connect(home.db_path) as db:
        assert db["meta"].exists() and not db["no_such_table"].exists()
        assert "meta" in db.table_names()
        assert [c.name for c in db["meta"].columns] == ["key", "value"]
        assert db["meta"].columns_dict == {"key": "TEXT", "value": "TEXT"}
        db.execute("INSERT INTO meta (key, value) VALUES (?, ?)", ["x.a", "1"])
        db.execute("INSERT INTO meta (key, value) VALUES (:k, :v)", {"k": "x.b", "v": "2"})
        rows = db.query("SELECT key, value FROM meta WHERE key LIKE 'x.%' ORDER BY key")
        assert list(rows) == [{"key": "x.a", "value": "1"}, {"key": "x.b", "value": "2"}]
    with pytest.raises(sqlite3.ProgrammingError):  # leaving the block closed it
        db.execute("SELECT 1")


def test_immediate_takes_the_write_lock_up_front(home: Home) -> None:
    a = dbmod.connect(home.db_path, busy_timeout_ms=100)
    b = dbmod.connect(home.db_path, busy_timeout_ms=100)
    with dbmod.immediate(a):
        with pytest.raises(StorageError, match="busy"):
            with dbmod.immediate(b):
                pass
    a.close()
    b.close()


def test_migrations_are_recorded_and_idempotent(home: Home) -> None:
    db = home.db()
    names = migrations.applied(db)
    assert names == [m.name for m in migrations.all_migrations("appliance")]
    assert migrations.pending(db, "appliance") == []
    assert migrations.migrate(db, "appliance") == []
    assert migrations.applied(db) == names
    db.close()
    report = init_home(home)
    assert report.created == [] and report.migrations == {"appliance": [], "monitoring": []}


def test_a_failing_migration_leaves_no_trace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = dbmod.connect(tmp_path / "m.db", create=True)

    def good(d):  # type: ignore[no-untyped-def]
        d.execute("CREATE TABLE good (x)")

    def bad(d):  # type: ignore[no-untyped-def]
        d.execute("CREATE TABLE half (x)")
        raise sqlite3.OperationalError("boom")

    monkeypatch.setattr(
        migrations, "all_migrations",
        lambda database: [migrations.Migration("t.1", good), migrations.Migration("t.2", bad)],
    )
    with pytest.raises(sqlite3.OperationalError):
        migrations.migrate(db, "x")
    assert migrations.applied(db) == ["t.1"]
    assert "half" not in db.table_names()
    db.close()


def test_init_creates_the_layout_with_private_modes(home: Home) -> None:
    for path in (home.root, home.blobs_dir, home.keys_dir, home.jobs_dir):
        assert path.is_dir()
    assert stat.S_IMODE(home.keys_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(home.root.stat().st_mode) == 0o750
    assert home.db_path.is_file() and home.monitoring_db_path.is_file()


def test_init_over_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "home").write_text("not a directory")
    with pytest.raises(StorageError, match="not a directory"):
        init_home(Home(tmp_path / "home"))


def test_init_on_a_read_only_location_names_the_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self, mode=0o777, parents=False, exist_ok=False):  # type: ignore[no-untyped-def]
        raise OSError(errno.EROFS, "Read-only file system", str(self))

    monkeypatch.setattr(Path, "mkdir", refuse)
    with pytest.raises(StorageError) as err:
        init_home(Home(tmp_path / "ro"))
    assert str(tmp_path / "ro") in str(err.value) and "--home" in str(err.value)


# --- blobs -------------------------------------------------------------------


def test_blob_round_trip_and_dedup(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs")
    digest = store.put_bytes(b"hello")
    assert digest == hashlib.sha256(b"hello").hexdigest()
    path = store.path(digest)
    assert path == tmp_path / "blobs" / "sha256" / digest[:2] / digest
    assert store.read_bytes(digest) == b"hello"
    assert store.put_bytes(b"hello") == digest
    assert stat.S_IMODE(path.stat().st_mode) == 0o444
    assert list(store.digests()) == [digest]
    assert list((tmp_path / "blobs" / "tmp").iterdir()) == []


def test_existing_blob_is_never_overwritten(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs")
    digest = store.put_bytes(b"original")
    path = store.path(digest)
    os.chmod(path, 0o644)
    path.write_bytes(b"tampered")
    assert store.put_bytes(b"original") == digest
    assert path.read_bytes() == b"tampered"  # untouched: a write never replaces a blob
    assert store.verify(digest) is False
    with pytest.raises(OperationFailed, match="does not match"):
        store.read_bytes(digest)


def test_put_file_streams(tmp_path: Path) -> None:
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(3 * 1024 * 1024 + 7))
    store = BlobStore(tmp_path / "blobs")
    digest = store.put_file(src)
    assert store.verify(digest)
    assert store.read_bytes(digest) == src.read_bytes()
    with pytest.raises(NotFound):
        store.put_file(tmp_path / "missing")


@pytest.mark.parametrize(
    "name", ["../../etc/passwd", "ab/../../x", "A" * 64, "0" * 63, "", "sha256:" + "g" * 64]
)
def test_names_that_could_escape_are_refused(tmp_path: Path, name: str) -> None:
    store = BlobStore(tmp_path / "blobs")
    with pytest.raises(BadInput, match="escape"):
        store.path(name)


def test_full_disk_leaves_no_partial_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = BlobStore(tmp_path / "blobs")

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(StorageError, match="disk full"):
        store.put_bytes(b"x" * 10000)
    monkeypatch.undo()
    assert list(store.digests()) == []
    assert list((tmp_path / "blobs" / "tmp").iterdir()) == []
    assert not store.exists(hashlib.sha256(b"x" * 10000).hexdigest())


@pytest.mark.parametrize("odd", ["site#2", "what?", "100%41"])
def test_a_home_whose_path_has_uri_characters_is_opened_where_it_is(
    tmp_path: Path, odd: str,
) -> None:
    # SQLite reads the path as a URI: unescaped, '#' and '?' cut it short (and drop
    # ?mode=), so init created the database somewhere else and then failed.
    base = tmp_path / "base"
    home = Home(base / odd / "home")
    init_home(home)
    assert home.db_path.is_file() and home.monitoring_db_path.is_file()
    assert [p.name for p in base.iterdir()] == [odd]  # nothing created beside it
    db = home.db()
    assert "meta" in db.table_names()
    db.close()
    with pytest.raises(StorageError, match="unable to open"):
        dbmod.connect(base / odd / "missing.db")  # mode=rw is honoured: nothing created
    assert not (base / odd / "missing.db").exists()
