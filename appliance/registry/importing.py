"""Importing an ONNX model made elsewhere as a new registry version."""

from __future__ import annotations

import os
from pathlib import Path

import sqlite_utils

from appliance.errors import BadInput
from appliance.onnxtools.models import check_model, probe_inference, signature_of
from appliance.registry.refs import check_name
from appliance.registry.versions import ModelVersion, insert_version
from appliance.storage.blobs import BlobStore
from appliance.storage.db import immediate


def import_model(
    db: sqlite_utils.Database,
    blobs: BlobStore,
    name: str,
    path: str | os.PathLike[str],
    *,
    actor: str,
    description: str = "",
) -> ModelVersion:
    """Validate (onnx.checker, then one inference on zeros) and register ``path``.

    Nothing is written unless both checks pass.
    """
    check_name(name, "model name")
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
    signature = signature_of(data)
    probe_inference(data, signature, str(file))
    digest = blobs.put_bytes(data)
    with immediate(db):
        return insert_version(
            db, name=name, onnx_digest=digest, signature=signature, actor=actor,
            source="import", description=description,
        )
