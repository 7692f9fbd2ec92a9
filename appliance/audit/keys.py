"""The audit signing key: Ed25519, one file per key under ``<home>/keys``.

A key is named by the log's origin and identified, as C2SP signed notes do,
by the first four bytes of SHA-256(name || 0x0A || 0x01 || public key). The
private key file (``audit-<id>.key``, mode 0600) holds the signer key in the
``PRIVATE+KEY+name+id+base64`` form; ``audit-<id>.pub`` and ``audit.pub`` (the
key in force) hold the verifier key ``name+id+base64``, the line an auditor
keeps. Which key is in force is recorded in ``audit_keys``, in the same
transaction as the audit entry that introduced it.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from appliance.audit.standalone_verify import (
    ALG_ED25519,
    SIG_PREFIX,
    FormatError,
    NoteVerifier,
    b64decode_strict,
    check_key_name,
    key_id,
)
from appliance.errors import StorageError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

PRIVATE_PREFIX = "PRIVATE+KEY+"
CURRENT_PUBLIC = "audit.pub"
KEY_MODE = 0o600


@dataclass(frozen=True)
class Signer:
    name: str
    seed: bytes

    @classmethod
    def generate(cls, name: str) -> Signer:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        from cryptography.hazmat.primitives.serialization import (
            Encoding,
            NoEncryption,
            PrivateFormat,
        )

        key = Ed25519PrivateKey.generate()
        seed = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        return cls(name=check_key_name(name), seed=seed)

    @property
    def _key(self) -> Ed25519PrivateKey:
        # cryptography: loaded when a key is used, not by every command that reads the trail
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        return Ed25519PrivateKey.from_private_bytes(self.seed)

    @property
    def verifier(self) -> NoteVerifier:
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        public = self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return NoteVerifier(name=self.name, id=key_id(self.name, public), public_key=public)

    @property
    def skey(self) -> str:
        b64 = base64.b64encode(bytes([ALG_ED25519]) + self.seed).decode("ascii")
        return f"{PRIVATE_PREFIX}{self.name}+{self.verifier.id.hex()}+{b64}"

    @classmethod
    def from_skey(cls, text: str) -> Signer:
        if not text.startswith(PRIVATE_PREFIX):
            raise FormatError("a signer key starts with PRIVATE+KEY+")
        parts = text[len(PRIVATE_PREFIX):].split("+", 2)
        if len(parts) != 3:
            raise FormatError("a signer key is PRIVATE+KEY+name+keyid+base64key")
        name, hex_id, b64 = parts
        raw = b64decode_strict(b64, "signer key")
        if len(raw) != 33 or raw[0] != ALG_ED25519:
            raise FormatError("signer key is not an Ed25519 key")
        signer = cls(name=check_key_name(name), seed=raw[1:])
        if signer.verifier.id.hex() != hex_id:
            raise FormatError("signer key id does not match its key")
        return signer

    def sign_note(self, body: str) -> str:
        """A signed note: the text, a blank line, one signature line."""
        signature = self._key.sign(body.encode("utf-8"))
        b64 = base64.b64encode(self.verifier.id + signature).decode("ascii")
        return f"{body}\n{SIG_PREFIX}{self.name} {b64}\n"


def key_path(keys_dir: Path, key_hex: str) -> Path:
    return keys_dir / f"audit-{key_hex}.key"


def write_key_files(keys_dir: Path, signer: Signer) -> None:
    """Write the private key (0600, never overwritten) and its public key files."""
    kid = signer.verifier.id.hex()
    path = key_path(keys_dir, kid)
    try:
        keys_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, KEY_MODE)
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            fh.write(signer.skey + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(path, KEY_MODE)
        (keys_dir / f"audit-{kid}.pub").write_text(signer.verifier.vkey + "\n", encoding="ascii")
    except OSError as exc:
        raise StorageError(f"can not write the audit key {path}: {exc.strerror or exc}") from exc


def publish_current(keys_dir: Path, verifier: NoteVerifier) -> Path:
    """Point ``audit.pub`` at the key in force (replaced atomically)."""
    target = keys_dir / CURRENT_PUBLIC
    tmp = keys_dir / f".{CURRENT_PUBLIC}.tmp"
    try:
        tmp.write_text(verifier.vkey + "\n", encoding="ascii")
        os.replace(tmp, target)
    except OSError as exc:
        raise StorageError(f"can not write {target}: {exc.strerror or exc}") from exc
    return target


def load_signer(keys_dir: Path, key_hex: str) -> Signer:
    path = key_path(keys_dir, key_hex)
    try:
        text = path.read_text(encoding="ascii").strip()
    except OSError as exc:
        raise StorageError(
            f"the audit signing key {path} can not be read ({exc.strerror or exc}); restore "
            "keys/ from a backup or run as the appliance user"
        ) from exc
    try:
        signer = Signer.from_skey(text)
    except FormatError as exc:
        raise StorageError(f"the audit signing key {path} is damaged: {exc}") from exc
    if signer.verifier.id.hex() != key_hex:
        raise StorageError(f"the audit signing key {path} is not key {key_hex}")
    return signer
