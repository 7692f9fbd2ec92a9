"""Exporting a registered version for another server: a Triton model repository, or the
layout KServe's ONNX runtime (Triton inside KServe) loads.

The exported ``model.onnx`` is the registered file itself, byte for byte (its
SHA-256 is checked on the way out), so a signature made at promotion still
verifies against it. Beside it go ``provenance.json`` (name, version, digest,
signature, who exported it and the audit entry that records it) and, for a signed
version, the signature as files ``openssl`` checks. The export is written in a
folder beside the destination and renamed into place in the transaction that
appends its audit entry: it is all there, recorded, or neither.

Triton's ``config.pbtxt`` comes from the version's signature: the Open Inference
Protocol datatypes map to Triton's ``TYPE_*``; when every input and output has a
variable first dimension it is the batch dimension (``max_batch_size`` and
dynamic batching), else the model is exported unbatched with its full shapes.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from appliance import audit
from appliance.audit.log import now_iso
from appliance.errors import BadInput, Conflict, OperationFailed, StorageError
from appliance.registry.refs import check_name
from appliance.registry.signing import get_signature, message, verify_model
from appliance.registry.versions import ModelVersion, resolve
from appliance.storage.blobs import BlobStore
from appliance.storage.db import Database, immediate

FORMATS = ("triton", "kserve")
PROVENANCE_FILE = "provenance.json"
SIGNED_MESSAGE_FILE = "signed-message.txt"
SIGNATURE_FILE = "model.onnx.sig"
PUBLIC_KEY_FILE = "model-signing.pub.pem"
ISVC_FILE = "inferenceservice.yaml"
KSERVE_REPOSITORY = "repository"
MAX_BATCH_SIZE = 1 << 20

# Open Inference Protocol datatypes to Triton's model configuration DataType names.
TRITON_TYPES = {
    "BOOL": "TYPE_BOOL", "UINT8": "TYPE_UINT8", "UINT16": "TYPE_UINT16",
    "UINT32": "TYPE_UINT32", "UINT64": "TYPE_UINT64", "INT8": "TYPE_INT8",
    "INT16": "TYPE_INT16", "INT32": "TYPE_INT32", "INT64": "TYPE_INT64", "FP16": "TYPE_FP16",
    "FP32": "TYPE_FP32", "FP64": "TYPE_FP64", "BYTES": "TYPE_STRING",
}


@dataclass(frozen=True)
class Export:
    ref: str  # NAME@VERSION exported
    format: str
    path: Path  # DIR/NAME
    files: tuple[str, ...]  # relative to path
    onnx_digest: str
    signed: bool
    audit_seq: int

    def as_dict(self) -> dict[str, Any]:
        return {"ref": self.ref, "format": self.format, "path": str(self.path),
                "files": list(self.files), "onnx": f"sha256:{self.onnx_digest}",
                "signed": self.signed, "audit_seq": self.audit_seq}


def _pb_string(text: str) -> str:
    # JSON's escapes (\" \\ \n \uXXXX for control characters) are what protobuf's text
    # format reads for the printable names used here.
    return json.dumps(text, ensure_ascii=True)


def batchable(signature: dict[str, Any]) -> bool:
    tensors = [*signature.get("inputs", []), *signature.get("outputs", [])]
    return bool(tensors) and all(t["shape"] and t["shape"][0] == -1 for t in tensors)


def triton_config(name: str, signature: dict[str, Any], *, max_batch_size: int = 64,
                  queue_delay_us: int = 0) -> str:
    """The ``config.pbtxt`` of an ONNX model with this signature, for Triton's onnxruntime
    backend."""
    if not 0 <= max_batch_size <= MAX_BATCH_SIZE:
        raise BadInput(f"max batch size must be from 0 to {MAX_BATCH_SIZE}")
    if queue_delay_us < 0:
        raise BadInput("queue delay must be >= 0 microseconds")
    batched = max_batch_size > 0 and batchable(signature)
    lines = [f"name: {_pb_string(name)}", 'platform: "onnxruntime_onnx"',
             f"max_batch_size: {max_batch_size if batched else 0}"]
    for side, key in (("inputs", "input"), ("outputs", "output")):
        blocks = []
        for t in signature.get(side, []):
            datatype = TRITON_TYPES.get(t["datatype"])
            if datatype is None:
                raise BadInput(f"{side[:-1]} {t['name']!r}: datatype {t['datatype']} has no "
                               "Triton equivalent")
            dims = list(t["shape"][1:] if batched else t["shape"])
            block = [f"    name: {_pb_string(t['name'])}", f"    data_type: {datatype}"]
            if dims:
                block.append(f"    dims: [ {', '.join(str(d) for d in dims)} ]")
            else:
                # One value per row: Triton wants at least one dimension, so [1] reshaped
                # to the model's scalar-per-row tensor.
                block += ["    dims: [ 1 ]", "    reshape: { shape: [ ] }"]
            blocks.append("  {\n" + "\n".join(block) + "\n  }")
        lines.append(f"{key} [\n" + ",\n".join(blocks) + "\n]")
    if batched:
        lines.append("dynamic_batching {\n"
                     f"  max_queue_delay_microseconds: {queue_delay_us}\n}}")
    return "\n".join(lines) + "\n"


def kserve_manifest(name: str, version: int) -> str:
    """An InferenceService for the export; STORAGE_URI is where the operator copies it."""
    return (
        "# Copy this folder's 'repository' directory to storage the cluster reads and put\n"
        "# its address below (s3://..., gs://..., pvc://CLAIM/PATH).\n"
        "apiVersion: serving.kserve.io/v1beta1\n"
        "kind: InferenceService\n"
        "metadata:\n"
        f"  name: {name.lower().replace('_', '-').replace('.', '-')}\n"
        "  annotations:\n"
        f"    appliance/model: {json.dumps(f'{name}@{version}')}\n"
        "spec:\n"
        "  predictor:\n"
        "    model:\n"
        "      modelFormat:\n"
        "        name: onnx\n"
        "      protocolVersion: v2\n"
        "      storageUri: STORAGE_URI\n"
    )


def _public_pem(public_b64: str) -> bytes:
    key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_b64))
    return key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)


def export_model(db: Database, blobs: BlobStore, keys_dir: Path, ref: str,
                 dest: str | os.PathLike[str], fmt: str, *, actor: str,
                 max_batch_size: int = 64, queue_delay_us: int = 0) -> Export:
    """Write ``ref`` (NAME@ALIAS or NAME@VERSION) under ``dest/NAME`` as ``fmt``, audited.

    A signed version is exported only when its signature verifies; an unsigned one is
    exported and said to be unsigned.
    """
    if fmt not in FORMATS:
        raise BadInput(f"format: {fmt!r} is not one of {', '.join(FORMATS)}")
    mv = resolve(db, ref)
    name = check_name(mv.name, "model name")
    data = blobs.read_bytes(mv.onnx_digest, verify=True)
    if hashlib.sha256(data).hexdigest() != mv.onnx_digest:
        raise OperationFailed(f"{mv.ref}: its ONNX blob does not match the registered digest")
    signed = verify_model(db, keys_dir, mv, data)  # raises when a signature does not verify
    sig = get_signature(db, mv.id) if signed else None
    config = triton_config(name, mv.signature, max_batch_size=max_batch_size,
                           queue_delay_us=queue_delay_us)
    root = Path(dest)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BadInput(f"DIR {root}: can not be created ({exc.strerror or exc})") from exc
    final = root / name
    if final.exists():
        raise Conflict(f"{final} already exists; remove it or export to another DIR")
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.export-", dir=root))
    renamed = False
    try:
        files = _write_layout(tmp, mv, fmt, config, data)
        files += _write_signature(tmp, mv, sig, data)
        with immediate(db):
            details = {"format": fmt, "path": str(final.resolve()),
                       "onnx": f"sha256:{mv.onnx_digest}", "signed": signed,
                       "key_id": sig.key_id if sig else None, "asked_as": ref}
            seq = audit.append(db, actor=actor, action="model.version.export",
                               target=f"model:{mv.ref}", details=details)
            provenance = {
                "model": name, "version": mv.version, "asked_as": ref, "format": fmt,
                "onnx_sha256": mv.onnx_digest, "signed": signed,
                "signature": None if sig is None else {
                    "key_id": sig.key_id, "public_key": sig.public_key,
                    "signature": sig.signature, "signed_at": sig.signed_at,
                    "signed_by": sig.signed_by,
                    "message": message(mv.name, mv.version, data).decode()},
                "exported_at": now_iso(), "exported_by": actor, "audit_seq": seq,
            }
            (tmp / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2) + "\n")
            files.append(PROVENANCE_FILE)
            os.rename(tmp, final)
            renamed = True
    except OSError as exc:
        raise OperationFailed(f"export to {final} failed: {exc.strerror or exc}") from exc
    except StorageError:
        if renamed:  # the audit entry did not commit: neither may the export stay
            shutil.rmtree(final, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return Export(ref=mv.ref, format=fmt, path=final, files=tuple(sorted(files)),
                  onnx_digest=mv.onnx_digest, signed=signed, audit_seq=seq)


def _write_layout(tmp: Path, mv: ModelVersion, fmt: str, config: str,
                  data: bytes) -> list[str]:
    model_dir = tmp if fmt == "triton" else tmp / KSERVE_REPOSITORY / mv.name
    prefix = "" if fmt == "triton" else f"{KSERVE_REPOSITORY}/{mv.name}/"
    (model_dir / str(mv.version)).mkdir(parents=True)
    (model_dir / "config.pbtxt").write_text(config)
    (model_dir / str(mv.version) / "model.onnx").write_bytes(data)
    files = [f"{prefix}config.pbtxt", f"{prefix}{mv.version}/model.onnx"]
    if fmt == "kserve":
        (tmp / ISVC_FILE).write_text(kserve_manifest(mv.name, mv.version))
        files.append(ISVC_FILE)
    return files


def _write_signature(tmp: Path, mv: ModelVersion, sig: Any, data: bytes) -> list[str]:
    if sig is None:
        return []
    (tmp / SIGNED_MESSAGE_FILE).write_bytes(message(mv.name, mv.version, data))
    (tmp / SIGNATURE_FILE).write_bytes(base64.b64decode(sig.signature))
    (tmp / PUBLIC_KEY_FILE).write_bytes(_public_pem(sig.public_key))
    return [SIGNED_MESSAGE_FILE, SIGNATURE_FILE, PUBLIC_KEY_FILE]
