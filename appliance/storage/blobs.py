"""A content-addressed, immutable blob store: ``<home>/blobs/sha256/ab/abcdef...``.

A write streams into a temporary file beside the store, hashing as it goes,
fsyncs it, and links it into place only if no blob of that digest exists; an
existing blob is never overwritten. A failed write (a full disk, say) leaves
no partial file. Digests are validated before they touch a path, so no name
can reach outside the store.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from appliance.errors import BadInput, NotFound, OperationFailed, StorageError

_DIGEST = re.compile(r"^[0-9a-f]{64}$")
CHUNK = 1 << 20


def check_digest(digest: str) -> str:
    """Accept ``abc...`` or ``sha256:abc...``; return the bare hex digest."""
    if not isinstance(digest, str):
        raise BadInput("blob digest must be a string")
    bare = digest[len("sha256:"):] if digest.startswith("sha256:") else digest
    if not _DIGEST.match(bare):
        raise BadInput(
            f"invalid blob digest {digest!r}: expected 64 lowercase hex characters "
            "(a name that is not a digest could escape the blob store)"
        )
    return bare


class BlobStore:
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.objects = self.root / "sha256"
        self.tmp = self.root / "tmp"

    def path(self, digest: str) -> Path:
        bare = check_digest(digest)
        return self.objects / bare[:2] / bare

    def exists(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def put_bytes(self, data: bytes) -> str:
        return self._write(iter([data]))

    def put_file(self, source: str | os.PathLike[str]) -> str:
        try:
            with open(source, "rb") as fh:
                return self.put_stream(fh)
        except FileNotFoundError as exc:
            raise NotFound(f"{source}: no such file") from exc

    def put_stream(self, stream: BinaryIO) -> str:
        return self._write(iter(lambda: stream.read(CHUNK), b""))

    def _write(self, chunks: Iterator[bytes]) -> str:
        import tempfile  # (and shutil, bz2, lzma with it) when a blob is written, not read

        try:
            self.tmp.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(dir=self.tmp, prefix="incoming-")
        except OSError as exc:
            raise self._os_error(self.tmp, exc) from exc
        tmp_path = Path(tmp_name)
        try:
            hasher = hashlib.sha256()
            with os.fdopen(fd, "wb") as out:
                for chunk in chunks:
                    hasher.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            digest = hasher.hexdigest()
            final = self.path(digest)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.chmod(tmp_path, 0o444)
            try:
                # link() fails if the name exists: a blob is never overwritten.
                os.link(tmp_path, final)
            except FileExistsError:
                pass
            else:
                _fsync_dir(final.parent)
            return digest
        except OSError as exc:
            raise self._os_error(tmp_path, exc) from exc
        finally:
            tmp_path.unlink(missing_ok=True)

    def open(self, digest: str) -> BinaryIO:
        path = self.path(digest)
        try:
            return open(path, "rb")
        except FileNotFoundError as exc:
            raise NotFound(f"blob sha256:{check_digest(digest)} is not in the store") from exc

    def read_bytes(self, digest: str, *, verify: bool = True) -> bytes:
        with self.open(digest) as fh:
            data = fh.read()
        if verify and hashlib.sha256(data).hexdigest() != check_digest(digest):
            raise OperationFailed(
                f"blob {self.path(digest)} does not match its digest: the store is damaged; "
                "restore it from a backup"
            )
        return data

    def verify(self, digest: str) -> bool:
        """Re-hash a stored blob; False when its bytes no longer match its name."""
        hasher = hashlib.sha256()
        with self.open(digest) as fh:
            for chunk in iter(lambda: fh.read(CHUNK), b""):
                hasher.update(chunk)
        return hasher.hexdigest() == check_digest(digest)

    def digests(self) -> Iterator[str]:
        if not self.objects.is_dir():
            return
        for sub in sorted(self.objects.iterdir()):
            if not sub.is_dir():
                continue  # a stray file is not a blob
            for blob in sorted(sub.iterdir()):
                if _DIGEST.match(blob.name) and blob.name.startswith(sub.name):
                    yield blob.name

    @staticmethod
    def _os_error(path: Path, exc: OSError) -> StorageError:
        if exc.errno == errno.ENOSPC:
            return StorageError(f"disk full while writing {path}; free space and try again")
        if exc.errno in (errno.EACCES, errno.EROFS, errno.EPERM):
            return StorageError(f"can not write {path}: {exc.strerror}; check permissions")
        return StorageError(f"blob store error at {path}: {exc.strerror or exc}")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sha256_file(path: str | os.PathLike[str]) -> str:
    hasher = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            hasher.update(chunk)
    return hasher.hexdigest()
