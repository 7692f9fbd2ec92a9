"""Data for a model made elsewhere: its reference profile and its evaluation on a dataset.

``models import NAME FILE --reference DS --eval DS`` and ``models attach REF``
come here. The reference dataset's profile becomes the version's drift
reference; the evaluation dataset's labelled rows are scored by the appliance
itself, through the ONNX file on the CPU, with the metrics trained models get,
and become the version's ``test`` metrics and the rows its metric gates are
measured on. Every model input must be a column of each dataset, by name.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from appliance.datasets import get_dataset_version, load_table
from appliance.datasets.service import DatasetVersion
from appliance.datasets.table import Table
from appliance.errors import BadInput
from appliance.onnxtools.models import declared_classes
from appliance.promotion import evaluate
from appliance.registry import ModelVersion, resolve
from appliance.registry.importing import (
    Attachment,
    attach_data,
    import_file,
    read_model_file,
)
from appliance.storage.db import Database
from appliance.storage.home import Home
from appliance.training.features import label_strings, labelled_rows

FLOATS = ("FP32", "FP64", "FP16")


def output_roles(signature: dict[str, Any]) -> dict[str, str]:
    """Which output holds the class probabilities, the label or the regression prediction.

    Probabilities: a float output of rank 2 whose last dimension is not 1 (the one
    named like "prob" first). Prediction: a float output of one value per row.
    Label: any other output of one value per row.
    """
    outputs = signature.get("outputs", [])
    probs = [o for o in outputs if o["datatype"] in FLOATS and len(o["shape"]) == 2
             and o["shape"][1] != 1]
    probs.sort(key=lambda o: "prob" not in o["name"].lower())
    single = [o for o in outputs if len(o["shape"]) == 1
              or len(o["shape"]) == 2 and o["shape"][1] == 1]
    roles: dict[str, str] = {}
    if probs:
        roles["probabilities"] = probs[0]["name"]
        labels = [o for o in single if o["name"] != probs[0]["name"]]
        if labels:
            roles["label"] = labels[0]["name"]
    else:
        floats = [o for o in single if o["datatype"] in FLOATS]
        if floats:
            roles["prediction"] = floats[0]["name"]
    return roles


def _check_columns(signature: dict[str, Any], dv: DatasetVersion, table: Table) -> None:
    """Every model input is a column of the dataset (exit 2 naming those that are not)."""
    names = [i["name"] for i in signature.get("inputs", [])]
    missing = [n for n in names if n not in table.columns]
    if missing:
        raise BadInput(
            f"dataset {dv.ref} has no column {', '.join(repr(n) for n in missing)} that the "
            f"model takes as input; its columns: {', '.join(table.columns)}. Each model input "
            "must be named after a column (skl2onnx: initial_types=[('COLUMN', "
            "FloatTensorType([None, 1])), ...])")
    if dv.target and dv.target in names:
        raise BadInput(f"the model takes the target column '{dv.target}' of {dv.ref} as input")
    wrong = [f"'{i['name']}' ({i['datatype']}, column is {table.types[i['name']]})"
             for i in signature.get("inputs", [])
             if i["datatype"] != "BYTES" and table.types[i["name"]] == "categorical"]
    if wrong:
        raise BadInput(f"dataset {dv.ref}: numeric model input(s) {', '.join(wrong)} hold "
                       "text; give the model a BYTES (string) input or another dataset")
    shapes = [i["name"] for i in signature.get("inputs", [])
              if len(i["shape"]) > 2 or len(i["shape"]) == 2 and i["shape"][1] not in (1, -1)]
    if shapes:
        raise BadInput(f"model input(s) {', '.join(shapes)} take several values a row; give "
                       "the model one input per column, named after it, of shape [N, 1]")


def _classes(data: bytes, signature: dict[str, Any], table: Table, target: str,
             dv: DatasetVersion) -> list[str]:
    width = next(o["shape"][1] for o in signature["outputs"]
                 if o["name"] == signature["roles"]["probabilities"])
    labels = sorted({v for v in label_strings(table, target) if v is not None})
    declared = signature.get("classes") or declared_classes(data)
    if declared is not None:
        if set(declared) == {"0", "1"} and set(labels) == {"false", "true"}:
            declared = ["true" if c == "1" else "false" for c in declared]
        if not set(declared) & set(labels):
            raise BadInput(f"the model's classes {declared} and the labels of '{target}' in "
                           f"{dv.ref} {labels[:10]} have none in common")
        return declared
    if width not in (-1, len(labels)):
        raise BadInput(f"the model gives {width} class probabilities, '{target}' in {dv.ref} "
                       f"has {len(labels)} labels; the model declares no class labels")
    return labels


def describe(home: Home, db: Database, data: bytes, signature: dict[str, Any],
             *, reference: str | None, evaluation: str | None) -> Attachment:
    """What the datasets give the model, computed and checked before anything is written."""
    att = Attachment()
    roles = output_roles(signature)
    info: dict[str, Any] = {"roles": roles}
    if "probabilities" in roles:
        info["task"] = "classification"
    elif "prediction" in roles:
        info["task"] = "regression"
    full = {**signature, **info}
    for ref, role in ((reference, "reference"), (evaluation, "evaluation")):
        if ref is None:
            continue
        dv = get_dataset_version(db, ref)
        table = load_table(home.blobs, dv)
        _check_columns(signature, dv, table)
        if dv.target:
            if full.get("target") not in (None, dv.target):
                raise BadInput(f"{dv.ref} has the target '{dv.target}', the other dataset "
                               f"'{full['target']}'; give datasets with the same target")
            full["target"] = dv.target
            if full.get("task") == "classification":
                full["classes"] = _classes(data, full, table, dv.target, dv)
        if role == "reference":
            att.reference, att.profile_digest = dv.ref, dv.profile_digest
            full["reference_dataset"] = dv.ref
            continue
        if not dv.target:
            raise BadInput(f"dataset {dv.ref} has no target column to evaluate against; "
                           "register it with 'appliance datasets add NAME FILE --target COLUMN'")
        task = full.get("task")
        if task is None:
            raise BadInput("the model has no output of class probabilities (float, [N, "
                           "classes]) nor of one prediction a row (float, [N] or [N, 1]) to "
                           "evaluate")
        rows = labelled_rows(table, dv.target, task)
        if not len(rows):
            raise BadInput(f"dataset {dv.ref} has no row with a value of '{dv.target}'")
        es = evaluate.EvalSet(dataset=dv.ref, table=table, rows=np.asarray(rows),
                              target=dv.target, task=task)
        test = evaluate.score(data, full, es)
        att.evaluation, att.evaluation_id = dv.ref, dv.id
        att.metrics = {"test": test, "rows": {"test": int(len(rows))},
                       "evaluation": {"dataset": dv.ref, "rows": int(len(rows))}}
    for key in ("task", "target", "classes", "roles", "reference_dataset"):
        if key in full:
            att.signature[key] = full[key]
    return att


def import_with_data(home: Home, db: Database, name: str,
                     path: str | os.PathLike[str], *, actor: str, description: str = "",
                     reference: str | None = None,
                     evaluation: str | None = None) -> tuple[ModelVersion, bool]:
    """Import ``path`` as the next version of ``name`` (or find the version it already is)
    with its reference and evaluation data; nothing is written unless all of it checks."""
    data, signature = read_model_file(path)
    attachment = None
    if reference is not None or evaluation is not None:
        attachment = describe(home, db, data, signature, reference=reference,
                              evaluation=evaluation)
    return import_file(db, home.blobs, name, data, signature, actor=actor,
                       description=description, attachment=attachment)


def attach(home: Home, db: Database, ref: str, *, actor: str,
           reference: str | None = None, evaluation: str | None = None) -> ModelVersion:
    """Give an existing imported version its reference and/or evaluation data."""
    if reference is None and evaluation is None:
        raise BadInput("give --reference DATASET, --eval DATASET or both")
    mv = resolve(db, ref)
    if mv.source != "import":
        raise BadInput(f"{mv.ref} was trained here: its reference and evaluation data are "
                       "those of its run")
    data = home.blobs.read_bytes(mv.onnx_digest, verify=True)
    base = {k: v for k, v in mv.signature.items() if k not in ("roles",)}
    attachment = describe(home, db, data, base, reference=reference, evaluation=evaluation)
    return attach_data(db, mv.ref, attachment, actor=actor)
