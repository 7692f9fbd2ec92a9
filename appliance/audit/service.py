"""The audit trail as the edges use it: keys, checkpoints, verification, queries.

Verification reads the entries and checkpoints in one read transaction (a
consistent snapshot while others append) and hands them to
``standalone_verify.verify_log``, the same code an auditor runs off the box.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from appliance.audit.checkpoints import (
    current_key,
    current_signer,
    latest_checkpoint,
    log_size,
    sign_checkpoint,
)
from appliance.audit.keys import Signer, publish_current, write_key_files
from appliance.audit.log import append
from appliance.audit.merkle import MerkleTree
from appliance.audit.standalone_verify import (
    KEY_ROTATED,
    FormatError,
    NoteVerifier,
    Report,
    Row,
    parse_checkpoint_body,
    parse_note,
    verify_consistency,
    verify_log,
)
from appliance.errors import BadInput, Conflict, NotFound
from appliance.storage.db import Database, immediate
from appliance.storage.home import Home

KEY_CREATED = "audit.key_created"


@dataclass(frozen=True)
class KeyInfo:
    vkey: str
    public_path: Path
    created: bool


def ensure_key(home: Home, actor: str) -> KeyInfo:
    """Make the signing key if there is none; run by ``appliance init``, safe to repeat.

    Creating the key is itself an audit entry, and the first checkpoint signs
    every entry made before it.
    """
    with home.db() as db:
        existing = current_key(db)
        if existing is not None:
            return KeyInfo(existing.vkey, home.keys_dir / "audit.pub", created=False)
        signer = Signer.generate(f"appliance/audit/{secrets.token_hex(8)}")
        write_key_files(home.keys_dir, signer)
        vkey = signer.verifier.vkey
        with immediate(db):
            if current_key(db) is not None:
                raise Conflict("another process created the audit key at the same time; run again")
            seq = append(db, actor=actor, action=KEY_CREATED, target=f"key:{signer.name}",
                         details={"key": vkey})
            db.execute("INSERT INTO audit_keys (key_id, vkey, created_seq) VALUES (?, ?, ?)",
                       [signer.verifier.id.hex(), vkey, seq])
            sign_checkpoint(db, signer)
        path = publish_current(home.keys_dir, signer.verifier)
        return KeyInfo(vkey, path, created=True)


def rotate_key(home: Home, actor: str) -> KeyInfo:
    """Replace the signing key; the rotation entry is signed by the old key before the new one signs."""
    with home.db() as db:
        old = current_signer(db)
        if old is None:
            raise NotFound("there is no audit key to rotate; run 'appliance init'")
        new = Signer.generate(old.name)
        write_key_files(home.keys_dir, new)
        with immediate(db):
            in_force = current_key(db)
            if in_force is None or in_force.key_id != old.verifier.id.hex():
                raise Conflict("the audit key changed meanwhile; run again")
            seq = append(db, actor=actor, action=KEY_ROTATED, target=f"key:{old.name}",
                         details={"old_key": old.verifier.vkey, "new_key": new.verifier.vkey})
            sign_checkpoint(db, old)
            db.execute("UPDATE audit_keys SET retired_seq = ? WHERE retired_seq IS NULL", [seq])
            db.execute("INSERT INTO audit_keys (key_id, vkey, created_seq) VALUES (?, ?, ?)",
                       [new.verifier.id.hex(), new.verifier.vkey, seq])
        path = publish_current(home.keys_dir, new.verifier)
        return KeyInfo(new.verifier.vkey, path, created=True)


def checkpoint(db: Database) -> str:
    """Sign the tree as it stands now (or return the checkpoint already at this size)."""
    with immediate(db):
        note = sign_checkpoint(db)
    if note is None:
        raise NotFound("there is no audit signing key yet; run 'appliance init'")
    return note


def checkpoints_size(db: Database) -> int:
    """How many entries the log holds."""
    return log_size(db)


def checkpoint_in_transaction(db: Database) -> str | None:
    """Sign the tree as it stands, inside the caller's write transaction."""
    return sign_checkpoint(db)


def genesis_key(db: Database) -> NoteVerifier:
    """The first key of the log: what on-box verification trusts unless told otherwise."""
    row = db.execute("SELECT vkey FROM audit_keys ORDER BY created_seq LIMIT 1").fetchone()
    if row is None:
        raise NotFound("there is no audit signing key yet; run 'appliance init'")
    return NoteVerifier.from_vkey(row[0])


def parse_vkey(text: str, where: str) -> NoteVerifier:
    try:
        return NoteVerifier.from_vkey(text.strip())
    except FormatError as exc:
        raise BadInput(f"{where}: not a verifier key: {exc}") from exc


def read_rows(db: Database) -> Iterator[Row]:
    for seq, entry, leaf, ts, actor, action, target in db.execute(
        "SELECT seq, entry, leaf_hash, ts, actor, action, target FROM audit_log ORDER BY seq"
    ):
        # A value whose type was changed by hand is compared as what it now holds.
        blob = entry.encode("utf-8") if isinstance(entry, str) else bytes(entry)
        stored = leaf if isinstance(leaf, bytes) else b""
        yield int(seq), blob, stored, (ts, actor, action, target)


def read_checkpoints(db: Database) -> list[tuple[int | None, str]]:
    return [(int(s), str(n)) for s, n in
            db.execute("SELECT size, note FROM audit_checkpoints ORDER BY size")]


def verify(
    db: Database, trusted: NoteVerifier | None = None, anchor: str | None = None
) -> Report:
    """Recompute every hash, link, root and signature; with an anchor, prove consistency with it."""
    trusted = trusted or genesis_key(db)
    db.conn.execute("BEGIN")  # one snapshot of entries and checkpoints
    try:
        report = verify_log(read_rows(db), read_checkpoints(db), trusted, anchor)
        if report.ok and anchor is not None:
            _prove_anchor(db, anchor, report)
    finally:
        db.conn.execute("COMMIT")
    return report


def verify_and_record(db: Database, actor: str) -> dict[str, Any]:
    """Verify the log (as ``verify``) and keep the outcome for the console's overview,
    with an audit entry saying who verified and what they found, in one transaction."""
    report = verify(db)
    at = datetime.now(UTC).isoformat(timespec="seconds")
    with immediate(db):
        db.execute(
            "INSERT INTO console_audit_checks (at, actor, ok, size, checkpoints, first_bad_seq,"
            " reason) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [at, actor, int(report.ok), report.size, report.checkpoints, report.first_bad_seq,
             report.reason])
        append(db, actor=actor, action="audit.verify", target="audit:log",
               details={"ok": report.ok, "size": report.size,
                        "first_bad_seq": report.first_bad_seq})
    return {"at": at, **report.as_dict()}


def last_verification(db: Database) -> dict[str, Any]:
    """The newest recorded verification of the log (``at`` is None when there is none),
    and how many entries the log holds now."""
    rows = list(db.query("SELECT * FROM console_audit_checks ORDER BY id DESC LIMIT 1"))
    size = db.execute("SELECT COUNT(*) FROM audit_log").fetchone()[0]
    if not rows:
        return {"at": None, "ok": None, "size": None, "entries_now": size}
    out = dict(rows[0])
    out["ok"] = bool(out["ok"])
    out["entries_now"] = size
    return out


def _prove_anchor(db: Database, anchor: str, report: Report) -> None:
    """Check the RFC 9162 consistency proof from the anchor to the latest checkpoint."""
    latest = latest_checkpoint(db)
    if latest is None:
        return
    first = parse_checkpoint_body(parse_note(anchor)[0])
    last = parse_checkpoint_body(parse_note(latest[1])[0])
    leaves = [bytes(r[0]) for r in db.execute(
        "SELECT leaf_hash FROM audit_log WHERE seq < ? ORDER BY seq", [last[1]])]
    proof = MerkleTree(leaves).consistency_proof(first[1], last[1])
    if not verify_consistency(first[1], last[1], proof, first[2], last[2]):
        report.ok, report.first_bad_seq = False, 0
        report.reason = "the latest checkpoint is not a consistent extension of the anchor"


def read_anchor(path: str | Path) -> str:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"anchor {path}: can not be read: {exc}") from exc
    try:
        parse_checkpoint_body(parse_note(text)[0])
    except FormatError as exc:
        # A wrong file is the caller's mistake, not evidence against the log.
        raise BadInput(f"anchor {path}: not a signed checkpoint: {exc}") from exc
    return text


def parse_since(text: str) -> str:
    """An ISO 8601 time (a date alone is its midnight, no zone is UTC) as the stored
    timestamps spell it, so that comparing the strings compares the times."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise BadInput(f"since {text!r}: expected an ISO 8601 time such as 2026-01-31 or "
                       "2026-01-31T09:30:00Z") from exc
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment.isoformat(timespec="microseconds") + "Z"


def entries(
    db: Database,
    *,
    since: str | None = None,
    actor: str | None = None,
    action: str | None = None,
    target: str | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Entries matching every filter given, oldest first (the last ``limit`` when limited)."""
    where, args = [], []
    if since is not None:
        since = parse_since(since)
    for column, value, op in (("ts", since, ">="), ("actor", actor, "="),
                              ("action", action, "="), ("target", target, "=")):
        if value is not None:
            where.append(f"{column} {op} ?")
            args.append(value)
    sql = "SELECT seq, ts, actor, action, target, entry FROM audit_log"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY seq DESC"
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    rows = db.execute(sql, args).fetchall()
    out = []
    for seq, ts, who, what, on, entry in reversed(rows):
        out.append({"seq": seq, "ts": ts, "actor": who, "action": what, "target": on,
                    "details": json.loads(bytes(entry))["details"]})
    return out
