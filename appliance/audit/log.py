"""Appending audit entries.

An entry is canonical JSON ``{seq, ts, actor, action, target, details, prev}``
(sorted keys, no spaces, UTF-8), stored as the exact bytes that are hashed.
Its leaf hash is SHA-256(0x00 || entry), as RFC 9162 hashes a Merkle leaf;
``prev`` is the previous entry's leaf hash in hex (64 zeros for the first),
which lets a verifier name the exact entry that was edited.

``append`` must run inside the caller's open write transaction, so a change
and its audit entry commit together or not at all. Every
``CHECKPOINT_EVERY``-th entry also signs a checkpoint in that transaction.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from appliance.audit.checkpoints import CHECKPOINT_EVERY, sign_checkpoint
from appliance.audit.standalone_verify import GENESIS_PREV, canonical_json, leaf_hash
from appliance.storage.db import Database

__all__ = ["append", "canonical_json", "leaf_hash", "now_iso"]


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def append(
    db: Database,
    *,
    actor: str,
    action: str,
    target: str,
    details: Mapping[str, Any] | None = None,
) -> int:
    """Append one entry in the caller's transaction; return its sequence number."""
    if not db.conn.in_transaction:
        raise RuntimeError("audit.append must run inside the change's write transaction")
    if not actor or not action:
        raise ValueError("an audit entry needs an actor and an action")
    row = db.execute("SELECT seq, leaf_hash FROM audit_log ORDER BY seq DESC LIMIT 1").fetchone()
    seq = int(row[0]) + 1 if row else 0
    prev = bytes(row[1]).hex() if row else GENESIS_PREV
    ts = now_iso()
    entry = canonical_json(
        {
            "seq": seq,
            "ts": ts,
            "actor": actor,
            "action": action,
            "target": target,
            "details": dict(details or {}),
            "prev": prev,
        }
    )
    db.execute(
        "INSERT INTO audit_log (seq, ts, actor, action, target, entry, leaf_hash)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        [seq, ts, actor, action, target, entry, leaf_hash(entry)],
    )
    if (seq + 1) % CHECKPOINT_EVERY == 0:
        sign_checkpoint(db)
    return seq
