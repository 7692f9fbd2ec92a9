"""``appliance backup`` / ``appliance restore``.

A backup is one tar file:

```
appliance.db  monitoring.db      consistent snapshots (SQLite online backup API)
blobs/sha256/ab/abcd...          every blob (immutable, so copied as they are)
keys/...                         the audit signing key and its public key
audit-checkpoint.txt             the audit log's signed checkpoint, taken just before
MANIFEST.json                    format, time, and the sha256 and size of every file above
```

The databases are snapshotted first and the blobs copied after, so every blob
a snapshot refers to is in the archive (blobs are written before the rows that
name them). Restore reads the manifest, checks every member's size and hash
while extracting into a temporary directory beside the target, and moves it
into place only when all of it verified: a damaged backup restores nothing.
The archive holds the signing key: keep it as carefully as the server.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import sqlite3
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from appliance import __version__
from appliance.audit import service as audit_service
from appliance.errors import BadInput, Conflict, NotFound, OperationFailed, StorageError
from appliance.storage.db import APPLIANCE_DB, MONITORING_DB, uri
from appliance.storage.home import DIR_MODE, KEYS_MODE, Home

FORMAT = "appliance.backup/1"
AUDIT_CHECKPOINT = "audit-checkpoint.txt"
CHECKPOINT_SUFFIX = ".checkpoint"
MANIFEST = "MANIFEST.json"
CHUNK = 1 << 20

Progress = Callable[[str], None]


@dataclass
class BackupReport:
    path: Path
    files: int
    bytes: int
    manifest_sha256: str
    checkpoint: Path | None = None  # the signed audit checkpoint written beside the backup


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _snapshot(source: Path, target: Path) -> None:
    """A consistent copy of a live WAL database, taken without stopping writers."""
    try:
        src = sqlite3.connect(uri(source, "ro"), uri=True)
    except sqlite3.DatabaseError as exc:
        raise StorageError(f"can not back up {source}: {exc}") from exc
    dst = sqlite3.connect(str(target))
    try:
        src.backup(dst)
        dst.execute("PRAGMA journal_mode = DELETE")
    except sqlite3.DatabaseError as exc:
        raise StorageError(f"can not back up {source}: {exc}") from exc
    finally:
        dst.close()
        src.close()


def _add(tar: tarfile.TarFile, path: Path, name: str) -> None:
    info = tar.gettarinfo(str(path), arcname=name)
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mode = 0o600
    with open(path, "rb") as fh:
        tar.addfile(info, fh)


def _sign_checkpoint(home: Home) -> str | None:
    """Sign the audit log as it stands, so the backup's snapshot holds the checkpoint too;
    None when the data directory has no signing key."""
    db = home.db()
    try:
        return audit_service.checkpoint(db)
    except NotFound:
        return None
    finally:
        db.close()


def backup(home: Home, out: Path, progress: Progress | None = None) -> BackupReport:
    """Write a backup of ``home`` to ``out`` (written beside, then renamed), and the audit
    checkpoint it was taken at to ``out`` + ``.checkpoint``, to keep apart from it."""
    say = progress or (lambda _msg: None)
    out = Path(out)
    sidecar = out.with_name(out.name + CHECKPOINT_SUFFIX)
    if out.exists() or sidecar.exists():
        raise Conflict(f"{out if out.exists() else sidecar} already exists; choose a new file name")
    if not home.db_path.exists():
        raise NotFound(f"{home.root} is not an initialised data directory")
    note = _sign_checkpoint(home)
    extra_files = {AUDIT_CHECKPOINT: note.encode()} if note else {}
    entries: dict[str, dict[str, object]] = {}
    total = 0
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".partial")
    os.close(fd)
    tmp_out = Path(tmp_name)
    try:
        with tempfile.TemporaryDirectory(dir=out.parent, prefix=".backup-") as scratch, \
                tarfile.open(tmp_out, "w") as tar:
            members: list[tuple[Path, str]] = []
            for db_name in (APPLIANCE_DB, MONITORING_DB):
                say(f"snapshot {db_name}")
                snap = Path(scratch) / db_name
                _snapshot(home.root / db_name, snap)
                members.append((snap, db_name))
            blobs = sorted(p for p in home.blobs.objects.rglob("*") if p.is_file())
            say(f"copy {len(blobs)} blobs")
            members += [(p, p.relative_to(home.root).as_posix()) for p in blobs]
            if home.keys_dir.is_dir():
                members += [(p, p.relative_to(home.root).as_posix())
                            for p in sorted(home.keys_dir.rglob("*")) if p.is_file()]
            for name, data in sorted(extra_files.items()):
                path = Path(scratch) / f"extra-{len(members)}"
                path.write_bytes(data)
                members.append((path, name))
            for path, name in members:
                size = path.stat().st_size
                entries[name] = {"sha256": _sha256(path), "size": size}
                _add(tar, path, name)
                total += size
            manifest = json.dumps(
                {"format": FORMAT, "appliance_version": __version__,
                 "created": datetime.now(UTC).isoformat(), "files": entries},
                indent=2, sort_keys=True,
            ).encode()
            info = tarfile.TarInfo(MANIFEST)
            info.size = len(manifest)
            info.mode = 0o600
            tar.addfile(info, io.BytesIO(manifest))
        with open(tmp_out, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp_out, 0o600)
        tmp_out.replace(out)
        if note:
            sidecar.write_text(note)
    except OSError as exc:
        raise StorageError(f"can not write backup {out}: {exc.strerror or exc}") from exc
    finally:
        tmp_out.unlink(missing_ok=True)
    say(f"wrote {out}: {len(entries)} files, {total} bytes")
    if note:
        say(f"wrote {sidecar}: the signed audit checkpoint of this backup; keep it apart from "
            "the backup and verify later with 'appliance audit verify --anchor FILE'")
    return BackupReport(path=out, files=len(entries), bytes=total,
                        manifest_sha256=hashlib.sha256(manifest).hexdigest(),
                        checkpoint=sidecar if note else None)


def _safe_name(name: str) -> str:
    parts = Path(name).parts
    if not parts or Path(name).is_absolute() or ".." in parts:
        raise BadInput(f"backup member {name!r} would escape the data directory")
    return name


def _manifest_files(archive: Path, manifest: object) -> dict[str, dict[str, object]]:
    """The manifest's ``files`` table, checked: name -> {sha256: hex, size: int}."""
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or not all(
        isinstance(entry, dict) and isinstance(entry.get("sha256"), str)
        and isinstance(entry.get("size"), int) for entry in files.values()
    ):
        raise BadInput(f"{archive}: {MANIFEST} has no valid 'files' table of sha256 and size")
    return files


def restore(archive: Path, home: Home, progress: Progress | None = None) -> int:
    """Restore ``archive`` into an empty or absent ``home``; return the number of files."""
    say = progress or (lambda _msg: None)
    archive = Path(archive)
    if not archive.is_file():
        raise NotFound(f"{archive}: no such backup file")
    if home.db_path.exists() or (home.root.is_dir() and any(home.root.iterdir())):
        raise BadInput(
            f"{home.root} already holds a data directory; restore into an empty --home, "
            "or move the existing one aside first"
        )
    try:
        tar = tarfile.open(archive, "r")
    except (tarfile.TarError, OSError) as exc:
        raise BadInput(f"{archive} is not a backup archive: {exc}") from exc
    try:
        with tar:
            seen = _restore_members(archive, tar, home, say)
    except tarfile.TarError as exc:
        # A truncated copy (a full USB stick, an interrupted transfer) ends here.
        raise OperationFailed(f"{archive} is damaged ({exc}); nothing was restored") from exc
    say(f"restored {home.root}")
    return seen


def _ends_as_written(archive: Path, tar: tarfile.TarFile) -> bool:
    """Does the file hold every member it lists and, after them, the two zero blocks that
    end every tar archive? (A compressed file is taken as whole: a cut one raises an error
    of its own.) tarfile reads a copy cut short at a member's data or header as a clean
    end, the members before it as the whole archive."""
    with archive.open("rb") as fh:
        if fh.read(6).startswith((b"\x1f\x8b", b"BZh", b"\xfd7zXZ")):
            return True
        size = fh.seek(0, 2)
        end = max((m.offset_data + -(-m.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
                   for m in tar.getmembers()), default=0)
        if size < end + 2 * tarfile.BLOCKSIZE:
            return False
        fh.seek(end)
        return fh.read(2 * tarfile.BLOCKSIZE) == bytes(2 * tarfile.BLOCKSIZE)


def _restore_members(archive: Path, tar: tarfile.TarFile, home: Home, say: Progress) -> int:
    try:
        manifest_member = tar.getmember(MANIFEST)
    except KeyError:
        if not _ends_as_written(archive, tar):
            # Cut at a block boundary, tarfile sees a clean end: the manifest, written
            # last, is what is missing.
            raise OperationFailed(f"{archive} is damaged (it stops before the archive's "
                                  "end); nothing was restored") from None
        raise BadInput(f"{archive} has no {MANIFEST}: not an appliance backup") from None
    fh = tar.extractfile(manifest_member)
    if fh is None:
        raise BadInput(f"{archive}: {MANIFEST} is not a file")
    try:
        manifest = json.loads(fh.read())
    except json.JSONDecodeError as exc:
        raise BadInput(f"{archive}: {MANIFEST} is not valid JSON ({exc})") from exc
    found = manifest.get("format") if isinstance(manifest, dict) else None
    if found != FORMAT:
        raise BadInput(f"{archive}: unknown backup format {found!r}")
    expected = _manifest_files(archive, manifest)
    try:
        home.root.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=home.root.parent,
                                        prefix=f".{home.root.name}.restore-"))
    except OSError as exc:
        raise StorageError(f"can not restore into {home.root}: {exc.strerror or exc}") from exc
    try:
        seen: set[str] = set()
        for member in tar.getmembers():
            if member.name == MANIFEST:
                continue
            name = _safe_name(member.name)
            if name not in expected:
                raise OperationFailed(f"{archive}: {name} is not in the manifest; refusing")
            if not member.isfile():
                raise OperationFailed(f"{archive}: {name} is not a regular file; refusing")
            target = staging / name
            target.parent.mkdir(parents=True, exist_ok=True)
            src = tar.extractfile(member)
            if src is None:
                raise OperationFailed(f"{archive}: can not read {name}")
            h = hashlib.sha256()
            size = 0
            # Private like the files it came from (the signing key among them),
            # whatever the umask of whoever restores.
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as dst:
                while chunk := src.read(CHUNK):
                    h.update(chunk)
                    size += len(chunk)
                    dst.write(chunk)
            want = expected[name]
            if h.hexdigest() != want["sha256"] or size != want["size"]:
                raise OperationFailed(
                    f"{archive}: {name} does not match the manifest (damaged backup); "
                    "nothing was restored"
                )
            seen.add(name)
        missing = sorted(set(expected) - seen)
        if missing:
            raise OperationFailed(f"{archive}: {len(missing)} files missing, e.g. {missing[0]}")
        for sub, mode in (("", DIR_MODE), ("blobs", DIR_MODE), ("blobs/sha256", DIR_MODE),
                          ("keys", KEYS_MODE), ("jobs", DIR_MODE)):
            (staging / sub).mkdir(parents=True, exist_ok=True)
            os.chmod(staging / sub, mode)
        for blob in (staging / "blobs").rglob("*"):
            if blob.is_file():
                os.chmod(blob, 0o444)
        for db_name in (APPLIANCE_DB, MONITORING_DB):
            if (staging / db_name).is_file():
                os.chmod(staging / db_name, 0o640)  # as 'appliance init' leaves them
        say(f"verified {len(seen)} files")
        if home.root.exists():
            if any(home.root.iterdir()):
                raise BadInput(f"{home.root} is not empty; restore into an empty --home")
            home.root.rmdir()
        staging.replace(home.root)
    except OSError as exc:
        raise StorageError(
            f"can not restore into {home.root}: {exc.strerror or exc}; nothing was restored"
        ) from exc
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return len(seen)
