"""The data directory: where every process finds the databases, blobs, keys and jobs.

```
<home>/appliance.db  monitoring.db  blobs/sha256/..  keys/  jobs/<id>/
```
"""

from __future__ import annotations

import errno
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from appliance.config import Config
from appliance.errors import NotInitialised, StorageError
from appliance.storage import db as dbmod
from appliance.storage import migrations
from appliance.storage.blobs import BlobStore
from appliance.storage.db import Database

DIR_MODE = 0o750
KEYS_MODE = 0o700


@dataclass(frozen=True)
class Home:
    root: Path
    busy_timeout_ms: int = 5000
    synchronous: str = "full"

    @classmethod
    def from_config(cls, root: Path, config: Config) -> Home:
        return cls(
            root=Path(root),
            busy_timeout_ms=config["storage.busy_timeout_ms"],
            synchronous=config["storage.synchronous"],
        )

    @property
    def db_path(self) -> Path:
        return self.root / dbmod.APPLIANCE_DB

    @property
    def monitoring_db_path(self) -> Path:
        return self.root / dbmod.MONITORING_DB

    @property
    def blobs_dir(self) -> Path:
        return self.root / "blobs"

    @property
    def keys_dir(self) -> Path:
        return self.root / "keys"

    @property
    def llm_dir(self) -> Path:
        """Language-model folders put back from the blob store for serving (a cache: hard
        links where the file system allows; not backed up)."""
        return self.root / "serving" / "llm"

    @property
    def jobs_dir(self) -> Path:
        return self.root / "jobs"

    def job_dir(self, job_id: int | str) -> Path:
        return self.jobs_dir / str(int(job_id))

    @property
    def blobs(self) -> BlobStore:
        return BlobStore(self.blobs_dir)

    def _require_initialised(self, path: Path) -> None:
        if not path.exists():
            raise NotInitialised(
                f"{path} does not exist: {self.root} is not an initialised data directory; "
                f"run 'appliance --home {self.root} init'"
            )

    def db(self) -> Database:
        """Open appliance.db (registry, jobs, users, audit); it must exist."""
        self._require_initialised(self.db_path)
        return dbmod.connect(
            self.db_path, busy_timeout_ms=self.busy_timeout_ms, synchronous=self.synchronous
        )

    def monitoring_db(self) -> Database:
        """Open monitoring.db (request log); durability traded for write speed."""
        self._require_initialised(self.monitoring_db_path)
        return dbmod.connect(
            self.monitoring_db_path, busy_timeout_ms=self.busy_timeout_ms, synchronous="normal"
        )


def _mkdir(path: Path, mode: int) -> bool:
    """Create one directory with ``mode``; True when it was created now."""
    try:
        path.mkdir(mode=mode, parents=True)
        os.chmod(path, mode)  # the umask may have narrowed it
        return True
    except FileExistsError:
        if not path.is_dir():
            raise StorageError(f"{path} exists and is not a directory; move it aside") from None
        return False
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EROFS, errno.EPERM):
            raise StorageError(
                f"can not create {path}: {exc.strerror}; run as the appliance user, "
                "fix the permissions, or choose another --home"
            ) from exc
        raise StorageError(f"can not create {path}: {exc.strerror}") from exc


@dataclass
class InitReport:
    created: list[str]
    migrations: dict[str, list[str]]


def init_home(home: Home) -> InitReport:
    """Create the data directory and databases, then apply pending migrations.

    Safe to run again: what exists is kept, and only pending migrations run.
    """
    created: list[str] = []
    for path, mode in (
        (home.root, DIR_MODE),
        (home.blobs_dir, DIR_MODE),
        (home.blobs_dir / "sha256", DIR_MODE),
        (home.keys_dir, KEYS_MODE),
        (home.jobs_dir, DIR_MODE),
    ):
        if _mkdir(path, mode):
            created.append(str(path))
    if not os.access(home.root, os.W_OK):
        raise StorageError(f"{home.root} is not writable; fix its permissions or choose --home")
    applied: dict[str, list[str]] = {}
    for name, path, sync in (
        ("appliance", home.db_path, home.synchronous),
        ("monitoring", home.monitoring_db_path, "normal"),
    ):
        existed = path.exists()
        database = dbmod.connect(
            path, create=True, busy_timeout_ms=home.busy_timeout_ms, synchronous=sync
        )
        try:
            if not existed:
                created.append(str(path))
                os.chmod(path, 0o640)
            try:
                applied[name] = migrations.migrate(database, name)
            except sqlite3.DatabaseError as exc:
                raise dbmod.storage_error(path, exc) from exc
        finally:
            database.close()
    return InitReport(created=created, migrations=applied)
