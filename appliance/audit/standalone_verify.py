#!/usr/bin/env python3
"""Check an appliance audit log with nothing but Python and ``cryptography``.

This one file is everything needed to verify the audit trail, so an auditor can
copy it off the box, read it, and run it against an export bundle with the
public key they were given at installation (never the one in the bundle):

    python standalone_verify.py --pubkey KEY EXPORT_DIR [--anchor CHECKPOINT]

It prints ``{"ok": ..., "first_bad_seq": ..., "reason": ...}`` as JSON and exits
0 when the log is intact, 1 when it is not, 2 when it can not be checked (the input
can not be read, or the ``cryptography`` package is not installed).
The appliance itself verifies its database with the same functions.

What is checked:
- every entry is canonical JSON ``{seq, ts, actor, action, target, details,
  prev}``, numbered 0, 1, 2, ... without gaps, and ``prev`` is the RFC 9162
  leaf hash of the entry before it;
- every checkpoint is a C2SP signed note (tlog-checkpoint body) signed with
  Ed25519 by the key in force at its size, parsed strictly (canonical base64,
  exact line formats), and its root is the RFC 9162 Merkle root of that many
  entries; a key rotation entry hands over to the next key only once a
  checkpoint signed by the old key covers it;
- an anchor (a checkpoint kept off the box) is matched against the log, which
  detects truncation and rewrites by whoever holds the signing key;
- the export's consistency proofs between checkpoints.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

# cryptography is imported where a signature is checked (NoteVerifier), not here: the
# appliance imports this module to read and append the trail, and an auditor's machine may
# lack the package, which main() reports before checking anything.
if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

ENTRY_KEYS = frozenset({"seq", "ts", "actor", "action", "target", "details", "prev"})
GENESIS_PREV = "0" * 64
ALG_ED25519 = 0x01
KEY_ROTATED = "audit.key_rotated"
SIG_PREFIX = "\u2014 "  # an em dash and a space start every signature line
EXPORT_FORMAT = "appliance-audit-export/1"

_DECIMAL = re.compile(r"(0|[1-9][0-9]{0,18})")
_HEX_ID = re.compile(r"[0-9a-f]{8}")
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f]")
_NAME_BAD = re.compile(r"[\s+\x00-\x1f\x7f]")


# --- RFC 9162 Merkle tree hashing -------------------------------------------


def leaf_hash(entry: bytes) -> bytes:
    """RFC 9162 §2.1.1: the hash of a leaf is SHA-256(0x00 || entry)."""
    return hashlib.sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 9162 §2.1.1: an interior node is SHA-256(0x01 || left || right)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


EMPTY_ROOT = hashlib.sha256(b"").digest()


class CompactRange:
    """The perfect subtrees covering leaves [0, size): O(log n) state, O(1) per append.

    Appending a leaf merges equal-sized subtrees (as many as the trailing one
    bits of the old size); the root folds them right to left, which is exactly
    RFC 9162's MTH with its split at the largest power of two below n.
    """

    __slots__ = ("size", "nodes")

    def __init__(self, size: int = 0, nodes: Sequence[bytes] = ()) -> None:
        if len(nodes) != bin(size).count("1"):
            raise ValueError(f"a compact range of size {size} has {bin(size).count('1')} nodes")
        self.size = size
        self.nodes: list[bytes] = list(nodes)

    def append(self, leaf: bytes) -> None:
        nodes = self.nodes
        nodes.append(leaf)
        n = self.size
        while n & 1:
            right = nodes.pop()
            nodes[-1] = hashlib.sha256(b"\x01" + nodes[-1] + right).digest()
            n >>= 1
        self.size += 1

    def root(self) -> bytes:
        if not self.nodes:
            return EMPTY_ROOT
        h = self.nodes[-1]
        for left in reversed(self.nodes[:-1]):
            h = node_hash(left, h)
        return h


def root_of(leaves: Iterable[bytes]) -> bytes:
    """MTH of a list of leaf hashes."""
    cr = CompactRange()
    for leaf in leaves:
        cr.append(leaf)
    return cr.root()


def verify_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> bool:
    """RFC 9162 §2.1.3.2: is ``leaf`` at ``index`` of the tree of ``size`` with ``root``?"""
    if index < 0 or index >= size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(
    size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes
) -> bool:
    """RFC 9162 §2.1.4.2: is the tree (size2, root2) an append-only extension of (size1, root1)?"""
    if size1 < 0 or size1 > size2:
        return False
    if size1 == size2:
        return not proof and root1 == root2
    if size1 == 0:
        return not proof
    path = list(proof)
    if size1 & (size1 - 1) == 0:
        path.insert(0, root1)
    if not path:
        return False
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == root1 and sr == root2 and sn == 0


# --- C2SP signed notes and tlog checkpoints ---------------------------------


class FormatError(ValueError):
    """Input that is not exactly in the expected format."""


def b64decode_strict(text: str, what: str) -> bytes:
    """Standard base64 that re-encodes to the same text, so no unused bit can be flipped."""
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise FormatError(f"{what} is not valid base64") from exc
    if base64.b64encode(raw).decode("ascii") != text:
        raise FormatError(f"{what} is not canonical base64")
    return raw


def key_id(name: str, public_key: bytes) -> bytes:
    """C2SP signed-note key id: SHA-256(name || 0x0A || 0x01 || public key)[:4]."""
    return hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([ALG_ED25519]) + public_key).digest()[:4]


def check_key_name(name: str) -> str:
    if not name or _NAME_BAD.search(name):
        raise FormatError(f"key name {name!r} is empty or holds '+', spaces or control characters")
    return name


@dataclass(frozen=True)
class NoteVerifier:
    """A named Ed25519 public key, as the C2SP vkey ``name+hexid+base64(0x01||key)``."""

    name: str
    id: bytes
    public_key: bytes

    @classmethod
    def from_vkey(cls, vkey: str) -> NoteVerifier:
        parts = vkey.split("+", 2)
        if len(parts) != 3:
            raise FormatError("a verifier key is 'name+keyid+base64key'")
        name, hex_id, b64 = parts
        check_key_name(name)
        if not _HEX_ID.fullmatch(hex_id):
            raise FormatError("verifier key id must be 8 lowercase hex digits")
        raw = b64decode_strict(b64, "verifier key")
        if len(raw) != 33 or raw[0] != ALG_ED25519:
            raise FormatError("verifier key is not an Ed25519 key (0x01 followed by 32 bytes)")
        kid = key_id(name, raw[1:])
        if kid.hex() != hex_id:
            raise FormatError("verifier key id does not match its name and key")
        return cls(name=name, id=kid, public_key=raw[1:])

    @property
    def vkey(self) -> str:
        b64 = base64.b64encode(bytes([ALG_ED25519]) + self.public_key).decode("ascii")
        return f"{self.name}+{self.id.hex()}+{b64}"

    @cached_property
    def _key(self) -> Ed25519PublicKey:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        return Ed25519PublicKey.from_public_bytes(self.public_key)

    def verify(self, message: bytes, signature: bytes) -> bool:
        from cryptography.exceptions import InvalidSignature

        try:
            self._key.verify(signature, message)
        except InvalidSignature:
            return False
        return True


@dataclass(frozen=True)
class NoteSignature:
    name: str
    key_id: bytes
    signature: bytes


def parse_note(text: str) -> tuple[str, list[NoteSignature]]:
    """Split a signed note into its text and signatures, strictly."""
    if not isinstance(text, str) or not text.endswith("\n"):
        raise FormatError("a signed note must end with a newline")
    if _CONTROL.search(text):
        raise FormatError("a signed note must not hold control characters")
    cut = text.rfind("\n\n")
    if cut < 0:
        raise FormatError("a signed note needs a blank line before its signatures")
    body, sig_block = text[: cut + 1], text[cut + 2 :]
    if not sig_block:
        raise FormatError("a signed note has no signatures")
    sigs = []
    for line in sig_block[:-1].split("\n"):
        if not line.startswith(SIG_PREFIX):
            raise FormatError("a signature line must start with an em dash and a space")
        fields = line[len(SIG_PREFIX) :].split(" ")
        if len(fields) != 2:
            raise FormatError("a signature line is '\u2014 name base64'")
        name = check_key_name(fields[0])
        raw = b64decode_strict(fields[1], "signature")
        if len(raw) != 4 + 64:
            raise FormatError("an Ed25519 note signature is a 4-byte key id and 64 bytes")
        sigs.append(NoteSignature(name=name, key_id=raw[:4], signature=raw[4:]))
    return body, sigs


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes
    text: str


def parse_checkpoint_body(body: str) -> tuple[str, int, bytes]:
    """``<origin>\\n<size>\\n<base64 root>\\n``; this log writes no extension lines."""
    lines = body.split("\n")
    if len(lines) != 4 or lines[3] != "":
        raise FormatError("a checkpoint body is exactly three lines: origin, size, root")
    origin, size_text, root_text = lines[:3]
    if not origin or origin != origin.strip():
        raise FormatError("checkpoint origin is empty or has surrounding spaces")
    if not _DECIMAL.fullmatch(size_text):
        raise FormatError("checkpoint size is not a decimal number without leading zeros")
    root = b64decode_strict(root_text, "checkpoint root")
    if len(root) != 32:
        raise FormatError("checkpoint root is not 32 bytes")
    return origin, int(size_text), root


def open_checkpoint(text: str, verifier: NoteVerifier) -> Checkpoint:
    """Parse a checkpoint and check it carries exactly one valid signature by ``verifier``."""
    body, sigs = parse_note(text)
    origin, size, root = parse_checkpoint_body(body)
    if len(sigs) != 1:
        raise FormatError(f"checkpoint has {len(sigs)} signatures; this log writes exactly one")
    sig = sigs[0]
    if sig.name != verifier.name or sig.key_id != verifier.id:
        raise FormatError(
            f"checkpoint is signed by {sig.name}+{sig.key_id.hex()}, not by the key in force "
            f"({verifier.name}+{verifier.id.hex()})"
        )
    if not verifier.verify(body.encode("utf-8"), sig.signature):
        raise FormatError("checkpoint signature does not verify")
    if origin != verifier.name:
        raise FormatError(f"checkpoint origin {origin!r} is not the log's ({verifier.name!r})")
    return Checkpoint(origin=origin, size=size, root=root, text=text)


# --- entries -----------------------------------------------------------------


_CANONICAL = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
)


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no spaces, UTF-8, no NaN: one byte string per value."""
    return _CANONICAL.encode(value).encode("utf-8")


def parse_entry(blob: bytes) -> dict[str, Any]:
    """Decode one entry; it must be exactly the canonical JSON of its own fields."""
    try:
        obj = json.loads(blob.decode("utf-8"))
        again = canonical_json(obj)
    except (UnicodeDecodeError, ValueError) as exc:
        raise FormatError(f"entry is not valid canonical JSON ({exc.__class__.__name__})") from exc
    if not isinstance(obj, dict) or obj.keys() != ENTRY_KEYS:
        raise FormatError("entry does not have exactly the fields " + ", ".join(sorted(ENTRY_KEYS)))
    if again != blob:
        raise FormatError("entry is not in canonical form")
    seq = obj["seq"]
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        raise FormatError("entry seq is not a non-negative integer")
    for name in ("ts", "actor", "action", "target", "prev"):
        if not isinstance(obj[name], str):
            raise FormatError(f"entry {name} is not a string")
    if not obj["actor"] or not obj["action"]:
        raise FormatError("entry has an empty actor or action")
    if not isinstance(obj["details"], dict):
        raise FormatError("entry details is not an object")
    return obj


# --- verifying a log ---------------------------------------------------------

# A stored row: (seq, entry bytes, stored leaf hash or None, (ts, actor, action, target) or None).
Row = tuple[int, bytes, "bytes | None", "tuple[str, str, str, str] | None"]


@dataclass
class Report:
    ok: bool
    size: int = 0
    first_bad_seq: int | None = None
    reason: str | None = None
    bad_range: tuple[int, int] | None = None
    checkpoints: int = 0
    signed_size: int = 0
    root: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ok": self.ok, "first_bad_seq": self.first_bad_seq,
                               "reason": self.reason, "size": self.size,
                               "checkpoints": self.checkpoints, "signed_size": self.signed_size,
                               "root": self.root}
        if self.bad_range is not None:
            out["bad_range"] = list(self.bad_range)
        return out


class _Bad(Exception):
    def __init__(self, seq: int, reason: str, bad_range: tuple[int, int] | None = None) -> None:
        super().__init__(reason)
        self.seq, self.reason, self.bad_range = seq, reason, bad_range


@dataclass
class _KeyChain:
    """Which key signs which sizes: a rotation hands over once the old key has signed it."""

    current: NoteVerifier
    history: list[tuple[int, NoteVerifier]] = field(default_factory=list)  # (last size, key)
    pending: tuple[int, NoteVerifier] | None = None  # (rotation seq, next key)

    def key_for(self, size: int) -> NoteVerifier:
        for last, key in self.history:
            if size <= last:
                return key
        return self.current


class _Ahead:
    """An iterator over rows that can look one row ahead."""

    def __init__(self, rows: Iterable[Row]) -> None:
        self._it = iter(rows)
        self._buf: list[Row] = []

    def __iter__(self) -> _Ahead:
        return self

    def __next__(self) -> Row:
        return self._buf.pop() if self._buf else next(self._it)

    def peek(self) -> Row | None:
        if not self._buf:
            nxt = next(self._it, None)
            if nxt is None:
                return None
            self._buf.append(nxt)
        return self._buf[0]


def _field(blob: bytes, name: str) -> Any:
    try:
        return parse_entry(blob)[name]
    except FormatError:
        return None


def verify_log(
    rows: Iterable[Row],
    checkpoints: Sequence[tuple[int | None, str]],
    trusted: NoteVerifier,
    anchor: str | None = None,
) -> Report:
    """Recompute everything and name the first entry that can not be trusted.

    ``rows`` in stored order; ``checkpoints`` as (stored size or None, note)
    in stored order. The first problem found wins; problems are looked for in
    the order of the entries they concern.
    """
    report = Report(ok=True)
    try:
        _verify(rows, checkpoints, trusted, anchor, report)
    except _Bad as bad:
        report.ok = False
        report.first_bad_seq, report.reason, report.bad_range = bad.seq, bad.reason, bad.bad_range
    return report


def _verify(
    rows: Iterable[Row],
    checkpoints: Sequence[tuple[int | None, str]],
    trusted: NoteVerifier,
    anchor_text: str | None,
    report: Report,
) -> None:
    keys = _KeyChain(current=trusted)
    anchor_root: bytes | None = None
    anchor_size = 0
    if anchor_text is not None:
        try:
            body, _ = parse_note(anchor_text)
            anchor_size = parse_checkpoint_body(body)[1]
        except FormatError as exc:
            raise _Bad(0, f"anchor checkpoint is malformed: {exc}") from exc
    cps = list(checkpoints)
    cp_i = 0
    last_good = 0  # size of the last checkpoint that verified
    tree = CompactRange()
    prev_leaf_hex = GENESIS_PREV
    prev_blob = b""
    rows_ahead = _Ahead(rows)
    position = 0

    seen_any = False
    last_text = ""
    sizes: list[tuple[int | None, str]] = []
    for _, text in cps:
        try:
            sizes.append((parse_checkpoint_body(parse_note(text)[0])[1], ""))
        except FormatError as exc:
            sizes.append((None, str(exc)))

    def _diagnose_before(size: int) -> None:
        """A root that does not match: can the next entry say which entry changed?"""
        nxt = rows_ahead.peek()
        if nxt is None or size == 0:
            return
        if _field(nxt[1], "seq") == size - 1:
            raise _Bad(size - 1, f"an entry was inserted at seq {size - 1} (the next one is "
                                 f"numbered {size - 1} inside)")
        if _field(nxt[1], "prev") != prev_leaf_hex:
            raise _Bad(size - 1, f"entry {size - 1} does not hash to the prev recorded in "
                                 f"entry {size}: entry {size - 1} was edited")

    def check_checkpoints(size: int) -> None:
        """Check every checkpoint stored for exactly ``size`` entries."""
        nonlocal cp_i, last_good, seen_any, last_text
        at = max(size - 1, 0)
        while cp_i < len(cps):
            stored, text = cps[cp_i]
            note_size, problem = sizes[cp_i]
            key = stored if stored is not None else note_size
            if key is None:
                raise _Bad(last_good, f"a checkpoint after size {last_good} is malformed: {problem}")
            if key > size:
                return
            if key < size or (seen_any and key <= last_good):
                raise _Bad(at, f"checkpoint of size {key} is out of order or repeated "
                               "(a replayed checkpoint)")
            if note_size is None:
                raise _Bad(at, f"checkpoint of size {key} is malformed: {problem}")
            if note_size != key:
                raise _Bad(at, f"checkpoint stored for size {key} holds a note for size "
                               f"{note_size} (a replayed checkpoint)")
            if keys.pending is not None and key > keys.pending[0] + 1:
                r = keys.pending[0]
                raise _Bad(r, f"key rotation at seq {r} is not attested by a checkpoint of size "
                              f"{r + 1} signed with the old key")
            try:
                cp = open_checkpoint(text, keys.current)
            except FormatError as exc:
                raise _Bad(at, f"checkpoint of size {key}: {exc}") from exc
            if cp.root != tree.root():
                _diagnose_before(size)
                raise _Bad(last_good, f"entries {last_good}..{at} do not match the signed "
                                      f"checkpoint of size {size}: rewritten after signing",
                           (last_good, at))
            if keys.pending is not None and key == keys.pending[0] + 1:
                keys.history.append((key, keys.current))
                keys.current = keys.pending[1]
                keys.pending = None
            last_good, seen_any, last_text = key, True, text
            report.checkpoints += 1
            cp_i += 1

    check_checkpoints(0)
    for row in rows_ahead:
        seq, blob, stored_leaf, columns = row
        i = position
        if seq != i:
            if seq > i:
                raise _Bad(i, f"entry {i} is missing (the next stored entry is {seq})")
            raise _Bad(i, f"entry {i} is stored again as seq {seq}")
        try:
            obj = parse_entry(blob)
        except FormatError as exc:
            raise _Bad(i, str(exc)) from exc
        leaf = leaf_hash(blob)
        if obj["seq"] != i:
            if obj["seq"] == i - 1:
                if blob == prev_blob:
                    raise _Bad(i, f"entry {i} is a duplicate of entry {i - 1}")
                raise _Bad(i - 1, f"an entry was inserted at seq {i - 1} (the next one is "
                                  f"numbered {i - 1} inside)")
            raise _Bad(i, f"the entry stored as seq {i} says it is seq {obj['seq']}")
        if stored_leaf is not None and stored_leaf != leaf:
            raise _Bad(i, f"entry {i} does not match its stored leaf hash: edited")
        if columns is not None and columns != (obj["ts"], obj["actor"], obj["action"], obj["target"]):
            raise _Bad(i, f"entry {i}'s indexed columns differ from the entry: edited")
        if obj["prev"] != prev_leaf_hex:
            if i > 0:
                nxt = rows_ahead.peek()
                if nxt is None or _field(nxt[1], "prev") == leaf.hex():
                    raise _Bad(i - 1, f"entry {i - 1} does not hash to the prev recorded in "
                                      f"entry {i}: entry {i - 1} was edited")
            raise _Bad(i, f"entry {i}'s prev does not match the hash of entry {i - 1}")
        if obj["action"] == KEY_ROTATED:
            _rotation(keys, obj, i)
        tree.append(leaf)
        prev_leaf_hex = leaf.hex()
        prev_blob = blob
        position += 1
        check_checkpoints(position)
        if anchor_text is not None and position == anchor_size:
            anchor_root = tree.root()
    size = position
    report.size = size
    report.root = base64.b64encode(tree.root()).decode("ascii")
    if cp_i < len(cps):
        raise _Bad(size, f"a checkpoint after the end attests more entries than the {size} "
                         "stored: the log was truncated")
    if keys.pending is not None:
        r = keys.pending[0]
        raise _Bad(r, f"key rotation at seq {r} is not attested by a checkpoint signed with the "
                      "old key")
    report.signed_size = last_good
    if anchor_text is not None:
        if anchor_size == 0:
            anchor_root = EMPTY_ROOT
        try:
            if anchor_text == last_text and anchor_size == last_good:
                # Already verified as the latest checkpoint; entries may have followed it,
                # so its root is the one at its own size, not the tree's root now.
                anchor = Checkpoint(keys.current.name, anchor_size, anchor_root or EMPTY_ROOT,
                                    anchor_text)
            else:
                anchor = open_checkpoint(anchor_text, keys.key_for(anchor_size))
        except FormatError as exc:
            raise _Bad(min(anchor_size, size), f"anchor checkpoint: {exc}") from exc
        if anchor.size > size:
            raise _Bad(size, f"the anchor attests {anchor.size} entries but the log holds "
                             f"{size}: the log was truncated")
        if anchor.root != anchor_root:
            raise _Bad(0, f"the first {anchor.size} entries do not match the anchor checkpoint: "
                          "the log was rewritten by someone holding the signing key",
                       (0, anchor.size - 1))


def _rotation(keys: _KeyChain, obj: dict[str, Any], seq: int) -> None:
    details = obj["details"]
    if keys.pending is not None:
        raise _Bad(seq, "a second key rotation before the first was attested")
    try:
        old = NoteVerifier.from_vkey(str(details.get("old_key", "")))
        new = NoteVerifier.from_vkey(str(details.get("new_key", "")))
    except FormatError as exc:
        raise _Bad(seq, f"key rotation entry names a malformed key: {exc}") from exc
    if old != keys.current:
        raise _Bad(seq, "key rotation starts from a key that is not the key in force")
    if new.name != old.name:
        raise _Bad(seq, "key rotation changes the log's name")
    keys.pending = (seq, new)


# --- export bundles ----------------------------------------------------------


def read_export(directory: Path) -> tuple[list[Row], list[tuple[int | None, str]], list[dict[str, Any]]]:
    """Read entries.jsonl, checkpoints.json and proofs.json strictly."""
    raw = (directory / "entries.jsonl").read_bytes()
    if raw and not raw.endswith(b"\n"):
        raise FormatError("entries.jsonl must end with a newline")
    lines = raw.split(b"\n")[:-1] if raw else []
    rows: list[Row] = []
    for index, line in enumerate(lines):
        try:
            seq = json.loads(line.decode("utf-8")).get("seq") if line else None
        except (UnicodeDecodeError, ValueError, AttributeError):
            seq = None
        rows.append((seq if isinstance(seq, int) and not isinstance(seq, bool) else index,
                     line, None, None))
    cps = json.loads((directory / "checkpoints.json").read_text(encoding="utf-8"))
    if not isinstance(cps, list) or not all(isinstance(c, str) for c in cps):
        raise FormatError("checkpoints.json must be a list of signed notes")
    proofs = json.loads((directory / "proofs.json").read_text(encoding="utf-8"))
    if not isinstance(proofs, list) or not all(isinstance(p, dict) for p in proofs):
        raise FormatError("proofs.json must be a list of objects")
    return rows, [(None, c) for c in cps], proofs


def check_proofs(
    proofs: Sequence[dict[str, Any]], checkpoints: Sequence[tuple[int | None, str]], report: Report
) -> None:
    """Each consistency proof must link two of the (already verified) checkpoints."""
    roots: dict[int, bytes] = {}
    for _, text in checkpoints:
        body, _ = parse_note(text)
        _, size, root = parse_checkpoint_body(body)
        roots[size] = root
    for p in proofs:
        first, second = p.get("from"), p.get("to")
        if first not in roots or second not in roots or not isinstance(p.get("proof"), list):
            raise FormatError(f"proof {first}->{second} does not link two checkpoints")
        if not all(isinstance(h, str) for h in p["proof"]):
            raise FormatError(f"proof {first}->{second} holds something other than base64 hashes")
        path = [b64decode_strict(h, "proof hash") for h in p["proof"]]
        if not verify_consistency(first, second, path, roots[first], roots[second]):
            report.ok = False
            report.first_bad_seq = first
            report.reason = f"consistency proof from size {first} to {second} does not verify"
            return


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="Verify an appliance audit export.")
    parser.add_argument("--pubkey", required=True,
                        help="the log's public key (vkey text, or a file holding it)")
    parser.add_argument("--anchor", help="a checkpoint kept off the box")
    parser.add_argument("export_dir", help="directory written by 'appliance audit export'")
    args = parser.parse_args(argv)
    try:
        import cryptography.hazmat.primitives.asymmetric.ed25519  # noqa: F401
    except ModuleNotFoundError as missing:
        name = missing.name or "cryptography"
        print(json.dumps({"ok": False, "first_bad_seq": None,
                          "reason": f"can not check: the Python package {name!r} is not "
                                    "installed (pip install cryptography); nothing was verified"}))
        return 2
    try:
        text = args.pubkey
        if Path(text).is_file():
            text = Path(text).read_text(encoding="utf-8")
        trusted = NoteVerifier.from_vkey(text.strip())
        anchor = Path(args.anchor).read_text(encoding="utf-8") if args.anchor else None
        if anchor is not None:
            parse_checkpoint_body(parse_note(anchor)[0])  # a wrong file is unreadable input
        rows, cps, proofs = read_export(Path(args.export_dir))
    except (OSError, ValueError) as exc:
        print(json.dumps({"ok": False, "first_bad_seq": None, "reason": f"unreadable input: {exc}"}))
        return 2
    report = verify_log(rows, cps, trusted, anchor)
    if report.ok:
        try:
            check_proofs(proofs, cps, report)
        except (FormatError, TypeError) as exc:
            report.ok, report.first_bad_seq, report.reason = False, 0, f"proofs.json: {exc}"
    print(json.dumps(report.as_dict(), sort_keys=True))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
