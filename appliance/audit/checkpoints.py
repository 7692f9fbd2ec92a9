"""Signed checkpoints of the audit tree, every ``CHECKPOINT_EVERY`` entries and on demand.

A checkpoint is a C2SP tlog-checkpoint (origin, tree size, root) in a signed
note. Each stored checkpoint keeps the compact range of its tree (the hashes
of its perfect subtrees), so the next root costs only the leaves appended
since: signing never re-hashes the whole log. Checkpoints are written in the
transaction of the entry that completes them, so a verifier can place a
rewrite between two checkpoints at most ``CHECKPOINT_EVERY`` entries apart.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from appliance.audit.keys import Signer, load_signer
from appliance.audit.standalone_verify import CompactRange
from appliance.errors import StorageError
from appliance.storage.db import Database

CHECKPOINT_EVERY = 64


@dataclass(frozen=True)
class KeyRow:
    key_id: str
    vkey: str


def keys_dir_of(db: Database) -> Path | None:
    """The ``keys/`` directory beside the database file (None for a database in memory)."""
    for _, name, file in db.execute("PRAGMA database_list").fetchall():
        if name == "main" and file:
            return Path(file).parent / "keys"
    return None


def current_key(db: Database) -> KeyRow | None:
    row = db.execute(
        "SELECT key_id, vkey FROM audit_keys WHERE retired_seq IS NULL"
    ).fetchone()
    return KeyRow(key_id=row[0], vkey=row[1]) if row else None


def current_signer(db: Database) -> Signer | None:
    """The key in force, or None while no key has been made (before ``appliance init``)."""
    key = current_key(db)
    keys_dir = keys_dir_of(db)
    if key is None or keys_dir is None:
        return None
    return load_signer(keys_dir, key.key_id)


def log_size(db: Database) -> int:
    return int(db.execute("SELECT COALESCE(MAX(seq), -1) + 1 FROM audit_log").fetchone()[0])


def latest_checkpoint(db: Database) -> tuple[int, str] | None:
    row = db.execute(
        "SELECT size, note FROM audit_checkpoints ORDER BY size DESC LIMIT 1"
    ).fetchone()
    return (int(row[0]), str(row[1])) if row else None


def sign_checkpoint(db: Database, signer: Signer | None = None) -> str | None:
    """Sign the tree as it stands, inside the caller's write transaction.

    Returns the note, the existing one when the tree has not grown since, or
    None when there is no signing key yet.
    """
    if not db.conn.in_transaction:
        raise RuntimeError("sign_checkpoint must run inside a write transaction")
    signer = signer or current_signer(db)
    if signer is None:
        return None
    size = log_size(db)
    row = db.execute(
        "SELECT size, note, compact FROM audit_checkpoints ORDER BY size DESC LIMIT 1"
    ).fetchone()
    if row is not None and int(row[0]) == size:
        return str(row[1])
    if row is not None and int(row[0]) > size:
        raise StorageError(
            f"the audit log holds {size} entries but was signed at {row[0]}: it was truncated; "
            "run 'appliance audit verify'"
        )
    start = int(row[0]) if row else 0
    blob = bytes(row[2]) if row else b""
    tree = CompactRange(start, [blob[i:i + 32] for i in range(0, len(blob), 32)])
    for (leaf,) in db.execute(
        "SELECT leaf_hash FROM audit_log WHERE seq >= ? ORDER BY seq", [start]
    ):
        tree.append(bytes(leaf))
    if tree.size != size:
        raise StorageError("the audit log has a gap in its sequence numbers; run 'appliance audit verify'")
    body = f"{signer.name}\n{size}\n{base64.b64encode(tree.root()).decode('ascii')}\n"
    note = signer.sign_note(body)
    db.execute(
        "INSERT INTO audit_checkpoints (size, note, key_id, compact, created_at)"
        " VALUES (?, ?, ?, ?, ?)",
        [size, note, signer.verifier.id.hex(), b"".join(tree.nodes),
         datetime.now(UTC).isoformat(timespec="seconds")],
    )
    return note
