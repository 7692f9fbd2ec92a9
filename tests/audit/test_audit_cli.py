"""The audit commands end to end: init makes the key, verify, anchors, export, standalone verifier."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

from appliance.audit import append, service
from appliance.audit.checkpoints import CHECKPOINT_EVERY
from appliance.audit.keys import Signer
from appliance.storage.db import Database, immediate
from appliance.storage.home import Home

STANDALONE = Path(__file__).resolve().parents[2] / "appliance" / "audit" / "standalone_verify.py"


def _fill(db: Database, n: int, actor: str = "alice") -> None:
    for i in range(n):
        with immediate(db):
            append(db, actor=actor, action="model.promote", target=f"model:m@{i}",
                   details={"i": i})


def _init(runner, home: Home) -> str:  # type: ignore[no-untyped-def]
    result = runner("init", "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.output)["audit_key"]


def test_init_makes_a_private_key_and_verify_passes(runner, home: Home, db) -> None:  # type: ignore[no-untyped-def]
    vkey = _init(runner, home)
    keys = list(home.keys_dir.glob("audit-*.key"))
    assert len(keys) == 1 and stat.S_IMODE(keys[0].stat().st_mode) == 0o600
    assert (home.keys_dir / "audit.pub").read_text().strip() == vkey
    assert runner("init", "--json").exit_code == 0  # again: same key
    assert list(home.keys_dir.glob("audit-*.key")) == keys
    _fill(db, CHECKPOINT_EVERY + 5)
    result = runner("audit", "verify", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["ok"] and report["size"] == CHECKPOINT_EVERY + 6 and report["checkpoints"] == 2
    out = runner("audit", "log", "--actor", "alice", "--target", "model:m@3", "--json")
    assert [e["details"] for e in json.loads(out.output)] == [{"i": 3}]
    assert "audit.key_created" in runner("audit", "log", "--action", "audit.key_created").output


def test_verify_names_the_first_bad_entry(runner, home: Home, db) -> None:  # type: ignore[no-untyped-def]
    _init(runner, home)
    _fill(db, 20)
    db.execute("UPDATE audit_log SET entry = replace(entry, 'm@7', 'm@8') WHERE seq = 8")
    result = runner("audit", "verify")
    assert result.exit_code == 1
    assert "first bad seq 8" in result.output


def test_anchor_catches_truncation_and_a_rewrite_by_the_key_holder(
    runner, home: Home, db, tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    _init(runner, home)
    _fill(db, 100)
    anchor = tmp_path / "anchor.txt"
    assert runner("audit", "checkpoint", "--out", str(anchor)).exit_code == 0
    assert runner("audit", "verify", "--anchor", str(anchor)).exit_code == 0
    backup = tmp_path / "backup.db"
    db.execute(f"VACUUM INTO '{backup}'")

    # Truncation: drop the newest entries and every checkpoint that mentions them.
    db.execute("DELETE FROM audit_log WHERE seq >= 90")
    db.execute("DELETE FROM audit_checkpoints WHERE size > 90")
    assert runner("audit", "verify").exit_code == 0  # undetectable without an anchor
    result = runner("audit", "verify", "--anchor", str(anchor), "--json")
    assert result.exit_code == 1
    assert json.loads(result.output)["first_bad_seq"] == 90

    # Rewrite by whoever holds the key: replace history from seq 40 and re-sign it all.
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    shutil.copy(backup, home.db_path)
    db2 = home.db()
    db2.execute("DELETE FROM audit_log WHERE seq >= 40")
    db2.execute("DELETE FROM audit_checkpoints WHERE size > 40")
    _fill(db2, 61, actor="mallory")
    service.checkpoint(db2)
    db2.close()
    assert runner("audit", "verify").exit_code == 0  # re-signed: consistent on its own
    result = runner("audit", "verify", "--anchor", str(anchor), "--json")
    assert result.exit_code == 1
    report = json.loads(result.output)
    assert report["bad_range"][0] <= 40 <= report["bad_range"][1]
    assert "rewritten" in report["reason"]


def test_an_anchor_still_verifies_after_more_entries(
    runner, home: Home, db, tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    # The usual routine: take an anchor, keep working, verify against it later, before
    # the next automatic checkpoint (the anchor is still the latest checkpoint).
    _init(runner, home)
    _fill(db, 10)
    anchor = tmp_path / "anchor.txt"
    assert runner("audit", "checkpoint", "--out", str(anchor)).exit_code == 0
    _fill(db, 5)
    result = runner("audit", "verify", "--anchor", str(anchor), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["size"] == 16
    out = tmp_path / "bundle"
    assert runner("audit", "export", "--out", str(out)).exit_code == 0
    proc = subprocess.run([sys.executable, "-I", str(STANDALONE), "--pubkey",
                           str(home.keys_dir / "audit.pub"), "--anchor", str(anchor), str(out)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout


def test_bad_files_and_times_are_bad_input_not_a_bad_log(
    runner, home: Home, db, tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    _init(runner, home)
    _fill(db, 3)
    unwritable = runner("audit", "checkpoint", "--out", str(tmp_path / "no" / "such" / "dir"))
    assert unwritable.exit_code == 2 and "can not be written" in unwritable.stderr
    not_a_checkpoint = tmp_path / "notes.txt"
    not_a_checkpoint.write_text("shopping list\n")
    wrong = runner("audit", "verify", "--anchor", str(not_a_checkpoint))
    assert wrong.exit_code == 2 and "not a signed checkpoint" in wrong.stderr
    assert "first bad seq" not in wrong.output
    out = tmp_path / "bundle"
    assert runner("audit", "export", "--out", str(out)).exit_code == 0
    proc = subprocess.run([sys.executable, "-I", str(STANDALONE), "--pubkey",
                           str(home.keys_dir / "audit.pub"), "--anchor", str(not_a_checkpoint),
                           str(out)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "unreadable input" in json.loads(proc.stdout)["reason"]
    # --since is a time, whatever its zone: 1 h ahead of UTC is the same instant as UTC.
    newest = json.loads(runner("audit", "log", "--json").output)[-1]["ts"]
    from datetime import datetime, timedelta, timezone

    at = datetime.fromisoformat(newest.replace("Z", "+00:00")).astimezone(
        timezone(timedelta(hours=1)))
    found = json.loads(runner("audit", "log", "--json", "--since", at.isoformat()).output)
    assert [e["ts"] for e in found] == [newest]
    bad = runner("audit", "log", "--since", "last tuesday")
    assert bad.exit_code == 2 and "ISO 8601" in bad.stderr


def test_export_checked_by_the_standalone_verifier_alone(
    runner, home: Home, db, tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    vkey = _init(runner, home)
    _fill(db, 70)
    assert runner("audit", "rotate-key").exit_code == 0
    _fill(db, 10)
    anchor = tmp_path / "anchor.txt"
    assert runner("audit", "checkpoint", "--out", str(anchor)).exit_code == 0
    out = tmp_path / "bundle"
    assert runner("audit", "export", "--out", str(out)).exit_code == 0
    assert runner("audit", "export", "--out", str(out)).exit_code == 1  # not empty
    assert {p.name for p in out.iterdir()} >= {"entries.jsonl", "checkpoints.json",
                                              "proofs.json", "audit.pub", "manifest.json"}
    lone = tmp_path / "elsewhere" / "standalone_verify.py"
    lone.parent.mkdir()
    shutil.copy(STANDALONE, lone)  # one file, outside the package
    key = tmp_path / "auditor.pub"
    key.write_text(vkey + "\n")

    def run(*extra: str) -> tuple[int, dict]:
        proc = subprocess.run([sys.executable, "-I", str(lone), "--pubkey", str(key), *extra,
                               str(out)], capture_output=True, text=True, timeout=60)
        return proc.returncode, json.loads(proc.stdout)

    code, report = run("--anchor", str(anchor))
    assert code == 0 and report["ok"] and report["size"] == 82, report
    # A proofs file edited into nonsense is reported, never a traceback.
    proofs_text = (out / "proofs.json").read_text()
    proofs = json.loads(proofs_text)
    proofs[0]["proof"] = [1]
    (out / "proofs.json").write_text(json.dumps(proofs))
    code, report = run()
    assert code == 1 and "proofs.json" in report["reason"], report
    (out / "proofs.json").write_text(proofs_text)
    lines = (out / "entries.jsonl").read_bytes().split(b"\n")
    lines[30] = lines[30].replace(b"m@", b"n@")
    (out / "entries.jsonl").write_bytes(b"\n".join(lines))
    code, report = run()
    assert code == 1 and report["first_bad_seq"] == 30 and report["reason"]
    # The key in the bundle is never trusted: a foreign key fails.
    key.write_text(Signer.generate(vkey.split("+")[0]).verifier.vkey + "\n")
    code, report = run()
    assert code == 1 and "not by the key in force" in report["reason"]


CHILD = textwrap.dedent("""
    import sys
    from pathlib import Path
    from appliance.audit import append
    from appliance.storage.db import immediate
    from appliance.storage.home import Home
    db = Home(root=Path(sys.argv[1])).db()
    for i in range(1000):
        with immediate(db):
            db.execute("INSERT INTO meta (key, value) VALUES (?, ?)"
                       " ON CONFLICT(key) DO UPDATE SET value = excluded.value", ["k", str(i)])
            append(db, actor="worker", action="model.promote", target=f"m{i}", details={"i": i})
        print(i, flush=True)
""")


def test_sigkill_during_appends_never_breaks_the_log(runner, home: Home) -> None:  # type: ignore[no-untyped-def]
    _init(runner, home)
    rng = random.Random(3)
    env = dict(os.environ, PYTHONPATH=str(STANDALONE.parents[2]))
    for _ in range(3):
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(home.root)],
                                 stdout=subprocess.PIPE, text=True, env=env)
        assert child.stdout is not None
        stop_after = rng.randrange(20, 200)
        for line in child.stdout:
            if int(line) >= stop_after:
                break
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        child.stdout.close()
        db = home.db()
        try:
            report = service.verify(db)
            assert report.ok, report.reason
            # The change and its entry committed together or not at all.
            last = db.execute("SELECT value FROM meta WHERE key = 'k'").fetchone()[0]
            assert service.entries(db, limit=1)[0]["details"] == {"i": int(last)}
        finally:
            db.close()


def test_audit_commands_need_the_os_users_permission(
    runner, home: Home, db, tmp_path: Path, monkeypatch  # type: ignore[no-untyped-def]
) -> None:
    from appliance.auth import users
    from appliance.cli import _common

    _init(runner, home)
    users.add_user(db, "vera", "viewer", "correct horse battery", actor="local:root")
    monkeypatch.setattr(_common, "os_user", lambda: "vera")
    assert runner("audit", "verify").exit_code == 0
    assert runner("audit", "log").exit_code == 0
    for args in (("rotate-key",), ("checkpoint", "--out", str(tmp_path / "cp.txt")),
                 ("export", "--out", str(tmp_path / "bundle"))):
        refused = runner("audit", *args)
        assert refused.exit_code == 1 and "needs audit.write" in refused.stderr, args
    assert not (tmp_path / "cp.txt").exists() and not (tmp_path / "bundle").exists()
    assert len(list(home.keys_dir.glob("audit-*.key"))) == 1, "no key was rotated"
    monkeypatch.setattr(_common, "os_user", lambda: "stranger")
    assert runner("audit", "log").exit_code == 1


def test_export_that_can_not_finish_leaves_nothing_behind(
    runner, home: Home, db, tmp_path: Path, monkeypatch  # type: ignore[no-untyped-def]
) -> None:
    import errno

    _init(runner, home)
    _fill(db, 5)
    real_write_text = Path.write_text

    def full_disk(self: Path, *args, **kwargs):  # type: ignore[no-untyped-def]
        if self.name == "proofs.json":
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return real_write_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full_disk)
    site = tmp_path / "site"
    site.mkdir()
    out = site / "new" / "bundle"
    result = runner("audit", "export", "--out", str(out))
    assert result.exit_code == 1 and not isinstance(result.exception, OSError), result.output
    assert "Traceback" not in result.output and str(out) in result.stderr
    assert "No space left on device" in result.stderr
    assert list(site.iterdir()) == [], "no partial bundle, no temporary directory"
    empty = site / "empty"
    empty.mkdir()
    assert runner("audit", "export", "--out", str(empty)).exit_code == 1
    assert empty.is_dir() and list(empty.iterdir()) == [] and list(site.iterdir()) == [empty]
    monkeypatch.undo()
    done = runner("audit", "export", "--out", str(empty), "--json")
    assert done.exit_code == 0, done.output
    assert json.loads(done.output)["size"] == len(
        (empty / "entries.jsonl").read_bytes().splitlines())
    assert sorted(p.name for p in empty.iterdir()) == sorted(
        ["entries.jsonl", "checkpoints.json", "proofs.json", "audit.pub", "manifest.json"])
    assert [p.name for p in site.iterdir()] == ["empty"]
