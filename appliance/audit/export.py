"""The export bundle: everything an auditor needs, checked with ``standalone_verify.py``.

```
entries.jsonl     one canonical entry per line, seq 0 first: the exact bytes that are hashed
checkpoints.json  the signed checkpoints, oldest first
proofs.json       RFC 9162 consistency proofs between consecutive checkpoints and to the latest
audit.pub         the key in force (for reference: the auditor verifies with their own copy)
manifest.json     format, size, origin and the SHA-256 of each file above
```
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import shutil
from pathlib import Path
from typing import Any

from appliance.audit.checkpoints import current_key
from appliance.audit.merkle import MerkleTree
from appliance.audit.service import read_checkpoints
from appliance.audit.standalone_verify import (
    EXPORT_FORMAT,
    parse_checkpoint_body,
    parse_note,
)
from appliance.errors import Conflict, NotFound, StorageError
from appliance.storage.db import Database

FILES = ("entries.jsonl", "checkpoints.json", "proofs.json", "audit.pub")


def export(db: Database, out: Path) -> dict[str, Any]:
    """Write the bundle into ``out`` (new or empty); return the manifest.

    The files are written into a temporary directory beside ``out`` and renamed
    into place at the end, so a failure (a full disk) leaves no partial bundle:
    it is a StorageError naming the path, and nothing the export made is left.
    """
    key = current_key(db)
    if key is None:
        raise NotFound("there is no audit signing key yet; run 'appliance init'")
    made = [p for p in (out.parent, *out.parent.parents) if not p.exists()]
    try:
        if out.exists() and not out.is_dir():
            raise Conflict(f"{out} is a file; export into a new directory")
        if out.exists() and any(out.iterdir()):
            raise Conflict(f"{out} is not empty; export into a new directory")
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.parent / f".{out.name}.{secrets.token_hex(6)}.partial"
        tmp.mkdir()
    except OSError as exc:
        _remove_made(made)
        raise StorageError(f"can not create {out}: {exc.strerror or exc}") from exc
    try:
        manifest = _write(db, key.vkey, tmp)
        os.replace(tmp, out)  # atomic; replaces ``out`` only while it is still empty
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        _remove_made(made)
        raise StorageError(f"can not write the audit export to {out}: "
                           f"{exc.strerror or exc}") from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        _remove_made(made)
        raise
    return manifest


def _remove_made(made: list[Path]) -> None:
    """Remove the parent directories an export created, innermost first, if still empty."""
    for path in made:
        try:
            path.rmdir()
        except OSError:
            return


def _write(db: Database, vkey: str, out: Path) -> dict[str, Any]:
    leaves: list[bytes] = []
    db.conn.execute("BEGIN")  # one snapshot of entries and checkpoints
    try:
        with open(out / "entries.jsonl", "wb") as fh:
            for entry, leaf in db.execute("SELECT entry, leaf_hash FROM audit_log ORDER BY seq"):
                fh.write(bytes(entry) + b"\n")
                leaves.append(bytes(leaf))
        cps = [note for _, note in read_checkpoints(db)]
    finally:
        db.conn.execute("COMMIT")
    sizes = [parse_checkpoint_body(parse_note(n)[0])[1] for n in cps]
    tree = MerkleTree(leaves)
    pairs = {(a, b) for a, b in zip(sizes, sizes[1:], strict=False)} | {(a, sizes[-1]) for a in sizes[:-1]}
    proofs = [
        {"from": a, "to": b,
         "proof": [base64.b64encode(h).decode("ascii") for h in tree.consistency_proof(a, b)]}
        for a, b in sorted(pairs) if b <= tree.size
    ]
    (out / "checkpoints.json").write_text(json.dumps(cps, indent=1) + "\n", encoding="utf-8")
    (out / "proofs.json").write_text(json.dumps(proofs, indent=1) + "\n", encoding="utf-8")
    (out / "audit.pub").write_text(vkey + "\n", encoding="ascii")
    manifest = {
        "format": EXPORT_FORMAT,
        "size": len(leaves),
        "origin": vkey.split("+")[0],
        "checkpoints": len(cps),
        "files": {name: hashlib.sha256((out / name).read_bytes()).hexdigest() for name in FILES},
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n",
                                       encoding="utf-8")
    return manifest
