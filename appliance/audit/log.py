"""Appending audit entries.

An entry is canonical JSON ``{seq, ts, actor, action, target, details}``
(sorted keys, no spaces, UTF-8), stored as the exact bytes that are hashed.
Its leaf hash is SHA-256(0x00 || entry), as RFC 9162 hashes a Merkle leaf.

``append`` must run inside the caller's open write transaction, so a change
and its audit entry commit together or not at all.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import sqlite_utils


def canonical_json(value: Any) -> bytes:
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def leaf_hash(entry: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + entry).digest()


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def append(
    db: sqlite_utils.Database,
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
    row = db.execute("SELECT COALESCE(MAX(seq), -1) + 1 FROM audit_log").fetchone()
    seq = int(row[0])
    ts = now_iso()
    entry = canonical_json(
        {
            "seq": seq,
            "ts": ts,
            "actor": actor,
            "action": action,
            "target": target,
            "details": dict(details or {}),
        }
    )
    db.execute(
        "INSERT INTO audit_log (seq, ts, actor, action, target, entry, leaf_hash)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        [seq, ts, actor, action, target, entry, leaf_hash(entry)],
    )
    return seq
