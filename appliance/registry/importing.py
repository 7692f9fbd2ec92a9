"""Importing an ONNX model made elsewhere as a registry version, and giving it data later.

The same bytes imported again under the same name give back the version they
already are, as a dataset registered twice does. An imported version has no
run: the data monitoring and promotion need (a reference profile for drift, an
evaluation set for the metric gates) is attached to it, at import or later,
once each, with an audit entry. What was attached is never changed afterwards.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appliance import audit
from appliance.errors import BadInput, Conflict
from appliance.llm.folder import inspect_folder, store_folder
from appliance.registry.refs import check_name
from appliance.registry.versions import ModelVersion, get_version_by_id, insert_version, resolve
from appliance.storage.blobs import BlobStore
from appliance.storage.db import Database, immediate

# Signature keys that attaching data may add to an imported version, once.
DATA_KEYS = ("task", "target", "classes", "roles", "reference_dataset")


@dataclass
class Attachment:
    """What a reference and an evaluation dataset give an imported version."""

    reference: str | None = None            # NAME@VERSION of the reference dataset
    profile_digest: str | None = None       # its profile blob
    evaluation: str | None = None           # NAME@VERSION of the evaluation dataset
    evaluation_id: int | None = None        # its dataset_versions.id
    metrics: dict[str, Any] = field(default_factory=dict)  # {"test": {...}, "evaluation": ...}
    signature: dict[str, Any] = field(default_factory=dict)  # task, target, classes, roles


def read_model_file(path: str | os.PathLike[str]) -> tuple[bytes, dict[str, Any]]:
    """The file's bytes and signature after onnx.checker and one inference on zeros."""
    # numpy, onnx and onnxruntime: imported here, so listing the registry does not pay for them
    from appliance.onnxtools.models import check_model, probe_inference, signature_of, unzip_maps

    file = Path(path)
    try:
        data = file.read_bytes()
    except FileNotFoundError as exc:
        raise BadInput(f"{file}: no such file") from exc
    except IsADirectoryError as exc:
        raise BadInput(f"{file} is a directory; give an .onnx file") from exc
    if not data:
        raise BadInput(f"{file} is empty; expected an ONNX model")
    check_model(data, str(file))
    unzipped = unzip_maps(data)
    extra: dict[str, Any] = {}
    if unzipped is not None:
        original = hashlib.sha256(data).hexdigest()
        data, classes = unzipped
        extra = {"classes": classes, "imported_from": {
            "sha256": original, "changed": "the ZipMap output (a sequence of maps) is served "
            "as the tensor of class probabilities it reads; the class labels are the "
            "model's 'classes' metadata"}}
    signature = {**signature_of(data, str(file)), **extra}
    probe_inference(data, signature, str(file))
    return data, signature


def existing_version(db: Database, name: str, digest: str) -> ModelVersion | None:
    """The version of ``name`` whose ONNX file is ``digest``, if one is."""
    row = db.execute(
        "SELECT mv.id FROM model_versions mv JOIN models m ON m.id = mv.model_id"
        " WHERE m.name = ? AND mv.onnx_digest = ? ORDER BY mv.version LIMIT 1",
        [name, digest]).fetchone()
    return get_version_by_id(db, int(row[0])) if row else None


def _kinds(db: Database, name: str) -> set[str]:
    """What the versions of ``name`` are: 'onnx' (tabular) and/or 'llm'."""
    return {json.loads(r[0]).get("kind", "onnx") for r in db.execute(
        "SELECT mv.signature FROM model_versions mv JOIN models m ON m.id = mv.model_id"
        " WHERE m.name = ?", [name])}


def import_file(
    db: Database,
    blobs: BlobStore,
    name: str,
    data: bytes,
    signature: dict[str, Any],
    *,
    actor: str,
    description: str = "",
    attachment: Attachment | None = None,
) -> tuple[ModelVersion, bool]:
    """Register checked bytes as the next version of ``name``, or give back the version
    they already are; True when a version was created. ``attachment`` is stored with it
    in the same transaction (on an existing version: what it does not have yet)."""
    check_name(name, "model name")
    digest = blobs.put_bytes(data)
    with immediate(db):
        if "llm" in _kinds(db, name):
            raise Conflict(f"model {name} is a language model; import the ONNX file under "
                           "another name")
        found = existing_version(db, name, digest)
        if found is not None:
            if attachment is not None:
                found = _attach(db, found, attachment, actor)
            return found, False
        mv = insert_version(
            db, name=name, onnx_digest=digest, signature=signature, actor=actor,
            source="import", description=description)
        if attachment is not None:
            mv = _attach(db, mv, attachment, actor)
        return mv, True


def import_model(
    db: Database,
    blobs: BlobStore,
    name: str,
    path: str | os.PathLike[str],
    *,
    actor: str,
    description: str = "",
) -> ModelVersion:
    """Validate (onnx.checker, then one inference on zeros) and register ``path``.

    Nothing is written unless both checks pass; the same bytes give back their version.
    """
    check_name(name, "model name")
    data, signature = read_model_file(path)
    return import_file(db, blobs, name, data, signature, actor=actor,
                       description=description)[0]


def import_folder(
    db: Database,
    blobs: BlobStore,
    name: str,
    path: str | os.PathLike[str],
    *,
    actor: str,
    description: str = "",
) -> tuple[ModelVersion, bool]:
    """Register a language model folder (onnxruntime-genai's layout) as the next version
    of ``name``: every file a blob, the folder one manifest whose digest names the
    version. Checked first (``inspect_folder``), so a folder that is not a valid model
    registers nothing; the same files again give back their version."""
    check_name(name, "model name")
    info = inspect_folder(path)
    digest = store_folder(blobs, path, info)
    with immediate(db):
        found = existing_version(db, name, digest)
        if found is not None:
            return found, False
        if _kinds(db, name) - {"llm"}:
            raise Conflict(f"model {name} holds tabular ONNX versions; import the language "
                           "model under another name")
        mv = insert_version(db, name=name, onnx_digest=digest, signature=info.signature(),
                            actor=actor, source="import", description=description)
        return mv, True


def attach_data(db: Database, ref: str, attachment: Attachment, *,
                actor: str) -> ModelVersion:
    """Give the imported version ``ref`` its reference profile and/or evaluation metrics."""
    with immediate(db):
        return _attach(db, resolve(db, ref), attachment, actor)


def _attach(db: Database, mv: ModelVersion, att: Attachment,
            actor: str) -> ModelVersion:
    if mv.source != "import":
        raise BadInput(f"{mv.ref} was trained here: its reference and evaluation data are "
                       "those of its run")
    if att.profile_digest is not None and mv.profile_digest not in (None, att.profile_digest):
        raise Conflict(f"{mv.ref} already has a reference profile (from "
                       f"{mv.signature.get('reference_dataset') or 'another dataset'}); "
                       "import the model again under a new name to use another")
    if att.evaluation_id is not None and mv.dataset not in (None, att.evaluation):
        raise Conflict(f"{mv.ref} already has the evaluation set {mv.dataset}; it is "
                       "not replaced")
    signature = dict(mv.signature)
    for key, value in att.signature.items():
        old = signature.get(key)
        if key == "classes" and old == ["0", "1"] and value == ["false", "true"]:
            pass  # integer labels of a boolean target, named as the dataset names them
        elif old is not None and old != value and key in ("task", "target", "classes"):
            raise BadInput(f"{mv.ref} has {key} {old!r}, the dataset gives {value!r}; use "
                           "datasets with the same target")
        if key == "roles":
            value = {**(old or {}), **value}
        signature[key] = value
    metrics = {**mv.metrics, **att.metrics}
    profile = att.profile_digest or mv.profile_digest
    dataset_id = att.evaluation_id
    if dataset_id is None:
        row = db.execute("SELECT dataset_version_id FROM model_versions WHERE id = ?",
                         [mv.id]).fetchone()
        dataset_id = row[0]
    changed = (signature != mv.signature or metrics != mv.metrics
               or profile != mv.profile_digest or att.evaluation_id is not None
               and mv.dataset is None)
    if not changed:
        return mv
    db.execute(
        "UPDATE model_versions SET signature = ?, metrics = ?, profile_digest = ?,"
        " dataset_version_id = ? WHERE id = ?",
        [json.dumps(signature, sort_keys=True), json.dumps(metrics, sort_keys=True), profile,
         dataset_id, mv.id])
    audit.append(db, actor=actor, action="model.version.attach", target=f"model:{mv.ref}",
                 details={"reference": att.reference, "evaluation": att.evaluation,
                          "profile": profile and f"sha256:{profile}",
                          "test": att.metrics.get("test")})
    return get_version_by_id(db, mv.id)
