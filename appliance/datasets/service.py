"""Registering and reading dataset versions.

A version is immutable: the file's bytes go to the blob store under their
hash, and the row records that hash with the schema, the row count and the
reference profile's blob. The same bytes with the same target give back the
version that already holds them, so registering is idempotent. Everything is
checked before anything is written: a bad file registers nothing.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from appliance import audit
from appliance.audit.log import canonical_json, now_iso
from appliance.errors import BadInput, NotFound
from appliance.registry.refs import check_name, parse_ref
from appliance.storage.blobs import BlobStore, sha256_file
from appliance.storage.db import Database, immediate

if TYPE_CHECKING:
    from appliance.datasets.table import Table


@dataclass(frozen=True)
class DatasetVersion:
    id: int
    name: str
    version: int
    digest: str
    format: str
    target: str | None
    schema: list[dict[str, str]]
    row_count: int
    size_bytes: int
    profile_digest: str
    created_at: str
    created_by: str

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    def as_dict(self) -> dict[str, Any]:
        return {"ref": self.ref, **asdict(self)}


_SELECT = (
    "SELECT v.*, d.name AS name FROM dataset_versions v JOIN datasets d ON d.id = v.dataset_id"
)


def _from_row(row: dict[str, Any]) -> DatasetVersion:
    return DatasetVersion(
        id=row["id"],
        name=row["name"],
        version=row["version"],
        digest=row["digest"],
        format=row["format"],
        target=row["target"] or None,
        schema=json.loads(row["schema"]),
        row_count=row["row_count"],
        size_bytes=row["size_bytes"],
        profile_digest=row["profile_digest"],
        created_at=row["created_at"],
        created_by=row["created_by"],
    )


def _existing(db: Database, name: str, digest: str, target: str) -> DatasetVersion | None:
    rows = list(
        db.query(_SELECT + " WHERE d.name = ? AND v.digest = ? AND v.target = ?",
                 [name, digest, target])
    )
    return _from_row(rows[0]) if rows else None


def add_dataset(
    db: Database,
    blobs: BlobStore,
    name: str,
    path: str | os.PathLike[str],
    *,
    actor: str,
    target: str | None = None,
    max_file_mb: int = 1024,
    infer_rows: int = 1000,
    profile_bins: int = 1000,
    profile_top_k: int = 50,
) -> tuple[DatasetVersion, bool]:
    """Register ``path`` as the next version of ``name``; return it and whether it is new."""
    check_name(name, "dataset name")
    file = Path(path)
    try:
        info = file.stat()
    except FileNotFoundError as exc:
        raise BadInput(f"{file}: no such file") from exc
    except OSError as exc:
        raise BadInput(f"{file}: can not be read: {exc.strerror or exc}") from exc
    if stat.S_ISDIR(info.st_mode):
        raise BadInput(f"{file} is a directory; give a CSV file")
    if not stat.S_ISREG(info.st_mode):  # a FIFO or a device would hang or never end
        raise BadInput(f"{file} is not a regular file; give a CSV file")
    size = info.st_size
    if size > max_file_mb * 1024 * 1024:
        raise BadInput(
            f"{file}: {size / 1048576:.1f} MiB is over the limit of {max_file_mb} MiB "
            "(setting datasets.max_file_mb)"
        )
    if file.suffix.lower() not in (".csv", ".txt", ""):
        raise BadInput(f"{file}: only CSV files are accepted (got '{file.suffix}')")
    try:
        digest = sha256_file(file)
        found = _existing(db, name, digest, target or "")
        if found:
            return found, False
        data = file.read_bytes()
    except OSError as exc:
        raise BadInput(f"{file}: can not be read: {exc.strerror or exc}") from exc
    # numpy: imported here, so listing and showing datasets does not pay for it
    from appliance.datasets.profile import build_profile
    from appliance.datasets.table import parse_csv

    table = parse_csv(data, source=str(file), infer_rows=infer_rows)
    if target is not None and target not in table.types:
        raise BadInput(
            f"{file}: target column '{target}' is not in the header "
            f"(columns: {', '.join(table.names)})"
        )
    profile = build_profile(table, bins=profile_bins, top_k=profile_top_k)
    stored = blobs.put_file(file)
    if stored != digest:
        raise BadInput(f"{file} changed while it was being registered; try again")
    profile_digest = blobs.put_bytes(canonical_json(profile))
    now = now_iso()
    with immediate(db):
        again = _existing(db, name, digest, target or "")
        if again:
            return again, False
        row = db.execute("SELECT id FROM datasets WHERE name = ?", [name]).fetchone()
        if row:
            dataset_id = int(row[0])
        else:
            cur = db.execute(
                "INSERT INTO datasets (name, created_at, created_by) VALUES (?, ?, ?)",
                [name, now, actor],
            )
            dataset_id = int(cur.lastrowid or 0)
        version = int(db.execute(
            "SELECT COALESCE(MAX(version), 0) + 1 FROM dataset_versions WHERE dataset_id = ?",
            [dataset_id],
        ).fetchone()[0])
        db.execute(
            "INSERT INTO dataset_versions (dataset_id, version, digest, format, target, schema,"
            " row_count, size_bytes, profile_digest, created_at, created_by)"
            " VALUES (?, ?, ?, 'csv', ?, ?, ?, ?, ?, ?, ?)",
            [dataset_id, version, digest, target or "", json.dumps(table.schema()),
             table.row_count, size, profile_digest, now, actor],
        )
        audit.append(
            db, actor=actor, action="dataset.register", target=f"dataset:{name}@{version}",
            details={"digest": f"sha256:{digest}", "rows": table.row_count,
                     "target": target, "profile": f"sha256:{profile_digest}"},
        )
        created = _existing(db, name, digest, target or "")
    if created is None:
        raise RuntimeError("dataset version vanished inside its own transaction")
    return created, True


def get_dataset_version(db: Database, ref: str) -> DatasetVersion:
    """``NAME@VERSION``, or ``NAME`` for the latest version."""
    parsed = parse_ref(ref, "dataset reference")
    if parsed.alias is not None:
        raise BadInput(f"dataset reference {ref!r}: datasets have versions, not aliases")
    if parsed.version is None:
        rows = list(db.query(_SELECT + " WHERE d.name = ? ORDER BY v.version DESC LIMIT 1",
                             [parsed.name]))
    else:
        rows = list(db.query(_SELECT + " WHERE d.name = ? AND v.version = ?",
                             [parsed.name, parsed.version]))
    if not rows:
        raise NotFound(f"dataset {ref} does not exist; see 'appliance datasets list'")
    return _from_row(rows[0])


def get_dataset_version_by_id(db: Database, version_id: int) -> DatasetVersion:
    rows = list(db.query(_SELECT + " WHERE v.id = ?", [version_id]))
    if not rows:
        raise NotFound(f"dataset version id {version_id} does not exist")
    return _from_row(rows[0])


def list_datasets(db: Database) -> list[dict[str, Any]]:
    """One row per dataset: its latest version and how many it has."""
    return list(db.query(
        "SELECT d.name, COUNT(v.id) AS versions, MAX(v.version) AS latest,"
        " d.created_at, d.created_by,"
        " (SELECT row_count FROM dataset_versions WHERE dataset_id = d.id"
        "  ORDER BY version DESC LIMIT 1) AS latest_rows"
        " FROM datasets d LEFT JOIN dataset_versions v ON v.dataset_id = d.id"
        " GROUP BY d.id ORDER BY d.name"
    ))


def list_versions(db: Database, name: str) -> list[DatasetVersion]:
    rows = list(db.query(_SELECT + " WHERE d.name = ? ORDER BY v.version", [name]))
    if not rows:
        raise NotFound(f"dataset {name} does not exist; see 'appliance datasets list'")
    return [_from_row(r) for r in rows]


def load_profile(blobs: BlobStore, version: DatasetVersion) -> dict[str, Any]:
    profile: dict[str, Any] = json.loads(blobs.read_bytes(version.profile_digest))
    return profile


def load_table(blobs: BlobStore, version: DatasetVersion) -> Table:
    """Re-read a version's bytes (hash-verified) with its recorded column types."""
    from appliance.datasets.table import parse_csv

    data = blobs.read_bytes(version.digest)
    types = {c["name"]: c["type"] for c in version.schema}
    return parse_csv(data, source=version.ref, types=types)
