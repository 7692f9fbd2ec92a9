"""Registering and reading evaluation-set versions, as datasets are.

A version is its JSONL file's bytes, stored in the blob store under their sha256. The
same bytes registered under the same name give back the version that holds them; other
bytes make the next version. Every line is checked before anything is written: a bad
file registers nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from appliance import audit
from appliance.audit.log import now_iso
from appliance.errors import BadInput, NotFound
from appliance.evals.cases import Case, parse_jsonl
from appliance.registry.refs import check_name, parse_ref
from appliance.storage.blobs import BlobStore
from appliance.storage.db import Database, immediate


@dataclass(frozen=True)
class EvalsetVersion:
    id: int
    name: str
    version: int
    digest: str
    cases: int
    scorers: dict[str, int]  # scorer -> cases that use it
    size_bytes: int
    created_at: str
    created_by: str

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    def as_dict(self) -> dict[str, Any]:
        return {"ref": self.ref, **asdict(self)}


_SELECT = ("SELECT v.*, s.name AS name FROM evalset_versions v "
           "JOIN evalsets s ON s.id = v.evalset_id")


def _from_row(row: dict[str, Any]) -> EvalsetVersion:
    return EvalsetVersion(id=row["id"], name=row["name"], version=row["version"],
                          digest=row["digest"], cases=row["cases"],
                          scorers=json.loads(row["scorers"]), size_bytes=row["size_bytes"],
                          created_at=row["created_at"], created_by=row["created_by"])


def _existing(db: Database, name: str, digest: str) -> EvalsetVersion | None:
    rows = list(db.query(_SELECT + " WHERE s.name = ? AND v.digest = ?", [name, digest]))
    return _from_row(rows[0]) if rows else None


def _read(path: Path, max_file_mb: int) -> bytes:
    try:
        info = path.stat()
    except FileNotFoundError:
        raise BadInput(f"{path}: no such file") from None
    except OSError as exc:
        raise BadInput(f"{path}: can not be read: {exc.strerror or exc}") from None
    if not stat.S_ISREG(info.st_mode):
        raise BadInput(f"{path} is not a regular file; give a JSONL file")
    if info.st_size > max_file_mb * 1024 * 1024:
        raise BadInput(f"{path}: {info.st_size / 1048576:.1f} MiB is over the limit of "
                       f"{max_file_mb} MiB (setting evals.max_file_mb)")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise BadInput(f"{path}: can not be read: {exc.strerror or exc}") from None


def add_evalset(db: Database, blobs: BlobStore, name: str,
                path: str | os.PathLike[str], *, actor: str, max_file_mb: int = 64
                ) -> tuple[EvalsetVersion, bool]:
    """Register ``path`` as the next version of ``name``; return it and whether it is new."""
    check_name(name, "evaluation set name")
    file = Path(path)
    data = _read(file, max_file_mb)
    digest = hashlib.sha256(data).hexdigest()
    found = _existing(db, name, digest)
    if found:
        return found, False
    cases = parse_jsonl(data, source=str(file))
    used = Counter(s for c in cases for s in {e["scorer"] for e in c.expect})
    stored = blobs.put_bytes(data)
    if stored != digest:
        raise RuntimeError("the blob store named the file by another hash")
    now = now_iso()
    with immediate(db):
        again = _existing(db, name, digest)
        if again:
            return again, False
        row = db.execute("SELECT id FROM evalsets WHERE name = ?", [name]).fetchone()
        if row:
            set_id = int(row[0])
        else:
            cur = db.execute("INSERT INTO evalsets (name, created_at, created_by) "
                             "VALUES (?, ?, ?)", [name, now, actor])
            set_id = int(cur.lastrowid or 0)
        version = int(db.execute(
            "SELECT COALESCE(MAX(version), 0) + 1 FROM evalset_versions WHERE evalset_id = ?",
            [set_id]).fetchone()[0])
        db.execute(
            "INSERT INTO evalset_versions (evalset_id, version, digest, cases, scorers,"
            " size_bytes, created_at, created_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [set_id, version, digest, len(cases), json.dumps(dict(sorted(used.items()))),
             len(data), now, actor])
        audit.append(db, actor=actor, action="evalset.register",
                     target=f"evalset:{name}@{version}",
                     details={"digest": f"sha256:{digest}", "cases": len(cases),
                              "scorers": sorted(used)})
        created = _existing(db, name, digest)
    if created is None:
        raise RuntimeError("evaluation set version vanished inside its own transaction")
    return created, True


def get_evalset_version(db: Database, ref: str) -> EvalsetVersion:
    """``NAME@VERSION``, or ``NAME`` for the latest version."""
    parsed = parse_ref(ref, "evaluation set reference")
    if parsed.alias is not None:
        raise BadInput(f"evaluation set {ref!r}: sets have versions, not aliases")
    if parsed.version is None:
        rows = list(db.query(_SELECT + " WHERE s.name = ? ORDER BY v.version DESC LIMIT 1",
                             [parsed.name]))
    else:
        rows = list(db.query(_SELECT + " WHERE s.name = ? AND v.version = ?",
                             [parsed.name, parsed.version]))
    if not rows:
        raise NotFound(f"evaluation set {ref} does not exist; see 'appliance evals list'")
    return _from_row(rows[0])


def get_evalset_version_by_id(db: Database, version_id: int) -> EvalsetVersion:
    rows = list(db.query(_SELECT + " WHERE v.id = ?", [version_id]))
    if not rows:
        raise NotFound(f"evaluation set version id {version_id} does not exist")
    return _from_row(rows[0])


def list_evalsets(db: Database) -> list[dict[str, Any]]:
    """One row per set: its latest version, how many versions, the latest's cases."""
    return list(db.query(
        "SELECT s.name, COUNT(v.id) AS versions, MAX(v.version) AS latest, s.created_at,"
        " s.created_by, (SELECT cases FROM evalset_versions WHERE evalset_id = s.id"
        "  ORDER BY version DESC LIMIT 1) AS latest_cases"
        " FROM evalsets s LEFT JOIN evalset_versions v ON v.evalset_id = s.id"
        " GROUP BY s.id ORDER BY s.name"))


def load_cases(blobs: BlobStore, version: EvalsetVersion) -> list[Case]:
    """The version's cases, from its bytes (hash-verified)."""
    return parse_jsonl(blobs.read_bytes(version.digest, verify=True), source=version.ref)
