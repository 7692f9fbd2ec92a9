"""Backup and restore: consistent while writers run, verified before anything is restored."""

from __future__ import annotations

import tarfile
import threading
from pathlib import Path

import pytest

from appliance.backup import backup, restore
from appliance.errors import BadInput, Conflict, OperationFailed
from appliance.storage.db import immediate
from appliance.storage.home import Home


def _write_rows(home: Home, n: int) -> None:
    db = home.db()
    for i in range(n):
        with immediate(db):
            db.execute("INSERT INTO meta (key, value) VALUES (?, ?)", [f"k{i}", str(i)])
    db.close()


def test_round_trip(home: Home, tmp_path: Path) -> None:
    digest = home.blobs.put_bytes(b"an onnx model")
    (home.keys_dir / "audit.pub").write_bytes(b"public key")
    _write_rows(home, 5)
    out = tmp_path / "b.tar"
    report = backup(home, out)
    assert out.is_file() and report.files >= 4
    assert (out.stat().st_mode & 0o777) == 0o600
    target = Home(tmp_path / "restored")
    n = restore(out, target)
    assert n == report.files
    assert target.blobs.read_bytes(digest) == b"an onnx model"
    assert (target.keys_dir / "audit.pub").read_bytes() == b"public key"
    db = target.db()
    assert db.execute("SELECT COUNT(*) FROM meta").fetchone()[0] == 5
    db.close()
    with pytest.raises(Conflict):
        backup(home, out)  # never overwrites


def test_backup_while_writing_is_consistent(home: Home, tmp_path: Path) -> None:
    stop = threading.Event()

    def writer() -> None:
        db = home.db()
        i = 0
        # Between transactions the lock is free for a moment, as between any real writer's:
        # a loop that took it back at once would starve every other writer (the backup signs
        # an audit checkpoint, which writes) past the busy timeout.
        while not stop.wait(0.001):
            with immediate(db):
                db.execute("INSERT INTO meta (key, value) VALUES (?, ?)", [f"a{i}", "x"])
                db.execute("INSERT INTO meta (key, value) VALUES (?, ?)", [f"b{i}", "x"])
            i += 1
        db.close()

    t = threading.Thread(target=writer)
    t.start()
    try:
        out = tmp_path / "live.tar"
        backup(home, out)
    finally:
        stop.set()
        t.join()
    target = Home(tmp_path / "r")
    restore(out, target)
    db = target.db()
    a = db.execute("SELECT COUNT(*) FROM meta WHERE key LIKE 'a%'").fetchone()[0]
    b = db.execute("SELECT COUNT(*) FROM meta WHERE key LIKE 'b%'").fetchone()[0]
    assert a == b  # each transaction is in the snapshot whole, or not at all
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    db.close()


def _rewrite(src: Path, dst: Path, change) -> None:  # type: ignore[no-untyped-def]
    with tarfile.open(src) as tin, tarfile.open(dst, "w") as tout:
        for member in tin.getmembers():
            data = tin.extractfile(member).read()  # type: ignore[union-attr]
            data, member = change(member, data)
            if member is None:
                continue
            member.size = len(data)
            import io

            tout.addfile(member, io.BytesIO(data))


def test_damaged_backup_restores_nothing(home: Home, tmp_path: Path) -> None:
    home.blobs.put_bytes(b"model")
    out = tmp_path / "b.tar"
    backup(home, out)

    def flip(member, data):  # type: ignore[no-untyped-def]
        if member.name.startswith("blobs/"):
            data = bytes([data[0] ^ 1]) + data[1:]
        return data, member

    bad = tmp_path / "bad.tar"
    _rewrite(out, bad, flip)
    target = Home(tmp_path / "r")
    with pytest.raises(OperationFailed, match="does not match the manifest"):
        restore(bad, target)
    assert not target.root.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".r")] == []

    def extra(member, data):  # type: ignore[no-untyped-def]
        if member.name == "MANIFEST.json":
            return data, member
        if member.name == "appliance.db":
            member.name = "evil.db"
        return data, member

    odd = tmp_path / "odd.tar"
    _rewrite(out, odd, extra)
    with pytest.raises(OperationFailed, match="not in the manifest"):
        restore(odd, target)
    assert not target.root.exists()


def test_restore_refuses_an_existing_home_and_junk(home: Home, tmp_path: Path) -> None:
    out = tmp_path / "b.tar"
    backup(home, out)
    with pytest.raises(BadInput, match="already holds"):
        restore(out, home)
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"not a tar")
    with pytest.raises(BadInput, match="not a backup archive"):
        restore(junk, Home(tmp_path / "x"))


def test_cli(runner, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "cli.tar"
    result = runner("backup", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output
    again = runner("backup", "--out", str(out))
    assert again.exit_code == 1 and "already exists" in again.stderr
    from click.testing import CliRunner

    from appliance.cli import main

    restored = CliRunner().invoke(main, ["--home", str(tmp_path / "new"), "restore", str(out)])
    assert restored.exit_code == 0, restored.output
    assert (tmp_path / "new" / "appliance.db").is_file()


def test_round_trip_under_a_path_with_uri_characters(tmp_path: Path) -> None:
    from appliance.storage.home import init_home

    home = Home(tmp_path / "site#2" / "home")
    init_home(home)
    _write_rows(home, 3)
    out = tmp_path / "b.tar"
    backup(home, out)
    target = Home(tmp_path / "r")
    restore(out, target)
    db = target.db()
    assert db.execute("SELECT COUNT(*) FROM meta").fetchone()[0] == 3
    db.close()


def test_restored_files_are_private_whatever_the_umask(home: Home, tmp_path: Path) -> None:
    import os
    import stat

    from appliance.audit.service import ensure_key

    key = ensure_key(home, "local:test")
    private = [p for p in home.keys_dir.iterdir() if p.name.endswith(".key")]
    assert private and key.public_path.is_file()
    out = tmp_path / "b.tar"
    backup(home, out)
    target = Home(tmp_path / "restored")
    old = os.umask(0o022)
    try:
        restore(out, target)
    finally:
        os.umask(old)
    for path in private:
        restored = target.keys_dir / path.name
        assert stat.S_IMODE(restored.stat().st_mode) == 0o600, restored  # the signing key
    assert stat.S_IMODE(target.db_path.stat().st_mode) == 0o640
    assert stat.S_IMODE(target.keys_dir.stat().st_mode) == 0o700


@pytest.mark.parametrize("where", ["halfway", "on a block boundary"])
def test_a_truncated_backup_is_refused_without_a_traceback(home: Home, tmp_path: Path,
                                                            where: str) -> None:
    home.blobs.put_bytes(b"model" * 100_000)
    out = tmp_path / "b.tar"
    backup(home, out)
    cut = tmp_path / "cut.tar"
    keep = out.stat().st_size // 2
    if where == "on a block boundary":  # tarfile then sees a clean end, without the manifest
        keep -= keep % 512
    else:
        keep -= keep % 512 - 100  # inside a block, wherever the block boundary falls
    cut.write_bytes(out.read_bytes()[:keep])  # a copy that stopped part way
    target = Home(tmp_path / "r")
    with pytest.raises(OperationFailed, match="damaged"):
        restore(cut, target)
    assert not target.root.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".r")] == []


@pytest.mark.parametrize("manifest", [b"[]", b'{"format": "appliance.backup/1"}',
                                      b'{"format": "appliance.backup/1", "files": {"x": 1}}'])
def test_a_malformed_manifest_is_bad_input(home: Home, tmp_path: Path, manifest: bytes) -> None:
    out = tmp_path / "b.tar"
    backup(home, out)

    def swap(member, data):  # type: ignore[no-untyped-def]
        return (manifest if member.name == "MANIFEST.json" else data), member

    odd = tmp_path / "odd.tar"
    _rewrite(out, odd, swap)
    with pytest.raises(BadInput, match="MANIFEST|format"):
        restore(odd, Home(tmp_path / "r"))
    assert not (tmp_path / "r").exists()


def test_every_backup_exports_a_signed_checkpoint(home: Home, tmp_path: Path) -> None:
    from appliance.audit import service as audit_service

    audit_service.ensure_key(home, "t")
    _write_rows(home, 3)
    out = tmp_path / "with-key.tar"
    report = backup(home, out)
    assert report.checkpoint == tmp_path / "with-key.tar.checkpoint"
    note = report.checkpoint.read_text()
    with tarfile.open(out) as tar:
        inside = tar.extractfile("audit-checkpoint.txt").read().decode()  # type: ignore[union-attr]
    assert inside == note
    target = Home(tmp_path / "restored")
    restore(out, target)
    db = target.db()
    try:
        assert audit_service.verify(db, anchor=note).ok  # the restored log extends it
    finally:
        db.close()
    with pytest.raises(Conflict, match="checkpoint"):
        out.unlink()
        backup(home, out)  # the sidecar of the earlier backup is never overwritten either
