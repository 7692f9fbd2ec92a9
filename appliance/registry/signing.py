"""Signed models: an Ed25519 signature over a version's ONNX bytes, made at promotion.

The signed message binds the bytes (their SHA-256, computed from the bytes
themselves) to the model name and version, so neither a changed file nor a
signature copied onto another version verifies. The signing key lives in
``<home>/keys/model-signing.key`` (0600), made on first use; the serving
daemon trusts only the public key beside it, not the one stored with the
signature, so rewriting the database alone can not make a model verify.

A version with a signature is loaded only when it verifies; a version never
promoted through the gates (an alias moved by hand) has none and is loaded as
before, which ``appliance models show`` and the model card make visible.
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from appliance import audit
from appliance.audit.log import now_iso
from appliance.errors import OperationFailed, StorageError
from appliance.registry import ModelVersion
from appliance.storage.db import Database

# cryptography is imported where a key signs or verifies: reading a signature's fields
# (models show, the model card) needs none of it
if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

PRIVATE_FILE = "model-signing.key"
PUBLIC_FILE = "model-signing.pub"
KEY_MODE = 0o600


@dataclass(frozen=True)
class ModelSignature:
    version_id: int
    key_id: str
    public_key: str
    signature: str
    signed_at: str
    signed_by: str


def message(name: str, version: int, data: bytes) -> bytes:
    digest = hashlib.sha256(data).hexdigest()
    return f"appliance.model-signature/1\n{name}\n{version}\nsha256:{digest}\n".encode()


def _key_id(public: bytes) -> str:
    return hashlib.sha256(public).hexdigest()[:16]


def _public_bytes(key: Ed25519PrivateKey) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def signing_key(keys_dir: Path) -> Ed25519PrivateKey:
    """The model-signing key, made on first use (two processes racing make one)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    path = keys_dir / PRIVATE_FILE
    if not path.exists():
        key = Ed25519PrivateKey.generate()
        seed = key.private_bytes_raw()
        try:
            keys_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, KEY_MODE)
        except FileExistsError:
            pass
        except OSError as exc:
            raise StorageError(f"can not create the model-signing key {path}: "
                               f"{exc.strerror or exc}") from exc
        else:
            with os.fdopen(fd, "w", encoding="ascii") as fh:
                fh.write(base64.b64encode(seed).decode("ascii") + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(path, KEY_MODE)
            (keys_dir / PUBLIC_FILE).write_text(
                base64.b64encode(_public_bytes(key)).decode("ascii") + "\n", encoding="ascii")
    try:
        seed = base64.b64decode(path.read_text(encoding="ascii").strip(), validate=True)
        return Ed25519PrivateKey.from_private_bytes(seed)
    except OSError as exc:
        raise StorageError(f"the model-signing key {path} can not be read "
                           f"({exc.strerror or exc})") from exc
    except ValueError as exc:
        raise StorageError(f"the model-signing key {path} is damaged: {exc}") from exc


def trusted_public_key(keys_dir: Path) -> bytes | None:
    """The public key serving trusts, or None when no model was ever signed here."""
    path = keys_dir / PUBLIC_FILE
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StorageError(f"{path} can not be read ({exc.strerror or exc})") from exc
    try:
        return base64.b64decode(text, validate=True)
    except ValueError as exc:
        raise StorageError(f"{path} is damaged: {exc}") from exc


def sign_in_transaction(db: Database, keys_dir: Path, mv: ModelVersion,
                        data: bytes, *, actor: str) -> ModelSignature:
    """Sign ``mv``'s bytes and store the signature, with its audit entry, in the caller's
    transaction; signing again replaces the earlier signature."""
    if not db.conn.in_transaction:
        raise RuntimeError("sign_in_transaction needs the caller's write transaction")
    if hashlib.sha256(data).hexdigest() != mv.onnx_digest:
        raise OperationFailed(f"{mv.ref}: its ONNX bytes do not match the registered digest; "
                              "refusing to sign them")
    key = signing_key(keys_dir)
    public = _public_bytes(key)
    sig = ModelSignature(
        version_id=mv.id, key_id=_key_id(public),
        public_key=base64.b64encode(public).decode("ascii"),
        signature=base64.b64encode(key.sign(message(mv.name, mv.version, data))).decode("ascii"),
        signed_at=now_iso(), signed_by=actor)
    db.execute(
        "INSERT INTO model_signatures (version_id, key_id, public_key, signature, signed_at,"
        " signed_by) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (version_id) DO UPDATE SET"
        " key_id = excluded.key_id, public_key = excluded.public_key,"
        " signature = excluded.signature, signed_at = excluded.signed_at,"
        " signed_by = excluded.signed_by",
        [sig.version_id, sig.key_id, sig.public_key, sig.signature, sig.signed_at, actor])
    audit.append(db, actor=actor, action="model.version.sign", target=f"model:{mv.ref}",
                 details={"key_id": sig.key_id, "onnx": f"sha256:{mv.onnx_digest}"})
    return sig


def get_signature(db: Database, version_id: int) -> ModelSignature | None:
    if not db["model_signatures"].exists():
        return None
    rows = list(db.query("SELECT * FROM model_signatures WHERE version_id = ?", [version_id]))
    return ModelSignature(**rows[0]) if rows else None


def verify_model(db: Database, keys_dir: Path, mv: ModelVersion,
                 data: bytes) -> bool:
    """True when ``data`` carries a valid signature for ``mv``; False when ``mv`` was never
    signed; OperationFailed, naming why, when a signature exists and does not verify."""
    sig = get_signature(db, mv.id)
    if sig is None:
        return False
    trusted = trusted_public_key(keys_dir)
    if trusted is None or _key_id(trusted) != sig.key_id:
        raise OperationFailed(f"{mv.ref} is signed by key {sig.key_id}, which this appliance "
                              "does not trust (keys/model-signing.pub); refusing to load it")
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        Ed25519PublicKey.from_public_bytes(trusted).verify(
            base64.b64decode(sig.signature), message(mv.name, mv.version, data))
    except (InvalidSignature, ValueError) as exc:
        raise OperationFailed(f"{mv.ref}: the model signature does not verify; its ONNX bytes "
                              "were changed after promotion; refusing to load it") from exc
    return True
