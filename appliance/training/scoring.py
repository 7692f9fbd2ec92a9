"""Scoring an ONNX model on rows of a table, as the appliance measures every model.

Templates, training scripts and promotion all score through these functions,
so a metric means the same wherever it was computed. A model takes either one
input per feature column (named as the column, ``[-1, 1]``), or one tensor
``[-1, F]`` whose columns are the signature's recorded ``feature_order``.
A classifier's scores are its ``probabilities`` output (or its only output),
one column per entry of the signature's ``classes``; a regressor's are its
``prediction`` output (or its only output).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from appliance.datasets.table import Table
from appliance.errors import OperationFailed
from appliance.onnxtools.models import NUMPY_TYPES
from appliance.onnxtools.providers import ort_errors
from appliance.onnxtools.sessions import cpu_session
from appliance.registry import output_name
from appliance.training.features import compute_metrics, label_strings

SCORE_OUTPUT = {"classification": "probabilities", "regression": "prediction"}
_FLOATS = {"FP32": np.float32, "FP64": np.float64, "FP16": np.float16}


def score_output(signature: dict[str, Any], task: str) -> str:
    """The output whose values are scored; OperationFailed when there is no such output."""
    names = [o["name"] for o in signature.get("outputs", [])]
    wanted = output_name(signature, SCORE_OUTPUT[task])
    if wanted in names:
        return wanted
    if len(names) == 1:
        return names[0]
    raise OperationFailed(f"the model has outputs {names}: a {task} model needs one named "
                          f"'{wanted}', or a single output")


def input_columns(signature: dict[str, Any]) -> list[str]:
    """The table columns a model reads, in the order it reads them."""
    order = signature.get("feature_order")
    if order:
        return [str(c) for c in order]
    return [spec["name"] for spec in signature.get("inputs", [])]


def feeds_for(signature: dict[str, Any], table: Table, rows: np.ndarray) -> dict[str, np.ndarray]:
    """The model's inputs from the table's columns; OperationFailed when one is absent."""
    inputs = signature.get("inputs", [])
    order = signature.get("feature_order")
    if order:
        if len(inputs) != 1:
            raise OperationFailed("a model with a recorded feature order must have exactly one "
                                  f"input, not {len(inputs)}")
        spec = inputs[0]
        columns = []
        for name in order:
            if name not in table.columns:
                raise OperationFailed(f"the data has no column '{name}' that the model takes")
            if table.types.get(name) not in ("numeric", "boolean"):
                raise OperationFailed(f"column '{name}' is {table.types.get(name)}: a model with "
                                      "one tensor input takes numeric and boolean columns only")
            columns.append(np.asarray(table.columns[name], dtype=np.float64)[rows])
        dtype = _FLOATS.get(spec["datatype"])
        if dtype is None:
            raise OperationFailed(f"input '{spec['name']}' is {spec['datatype']}: a model with "
                                  "one tensor input takes floating-point values")
        matrix = np.stack(columns, axis=1) if columns else np.zeros((len(rows), 0))
        return {spec["name"]: matrix.astype(dtype)}
    feeds: dict[str, np.ndarray] = {}
    for spec in inputs:
        name = spec["name"]
        if name not in table.columns:
            raise OperationFailed(f"the data has no column '{name}' that the model takes")
        column = table.columns[name]
        shape = (-1,) if len(spec.get("shape", [-1, 1])) == 1 else (-1, 1)
        if spec["datatype"] == "BYTES":
            feeds[name] = np.array([column[i] or "" if isinstance(column[i], str) or
                                    column[i] is None else format(float(column[i]), "g")
                                    for i in rows], dtype=object).reshape(shape)
        else:
            numeric: Any = NUMPY_TYPES.get(spec["datatype"], np.float32)
            values = np.asarray(column, dtype=np.float64)[rows]
            if not np.issubdtype(numeric, np.floating):
                values = np.nan_to_num(values)
            feeds[name] = values.astype(numeric).reshape(shape)
    return feeds


def run_model(data: bytes, signature: dict[str, Any], table: Table, rows: np.ndarray,
              outputs: list[str]) -> dict[str, np.ndarray]:
    """The named outputs of one onnxruntime run over ``rows``."""
    session = cpu_session(data)
    feeds = feeds_for(signature, table, rows)
    failures: tuple[type[BaseException], ...] = (*ort_errors(), ValueError, KeyError)
    try:
        values = session.run(outputs, feeds)
    except failures as exc:
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise OperationFailed(f"the model could not be scored: {text}") from exc
    return {name: np.asarray(v) for name, v in zip(outputs, values, strict=True)}


def score(data: bytes, signature: dict[str, Any], table: Table, rows: np.ndarray, task: str,
          target: str, names: list[str] | None = None) -> dict[str, float]:
    """A model's metrics on ``rows`` against the target column."""
    output = score_output(signature, task)
    (values,) = run_model(data, signature, table, rows, [output]).values()
    if task == "classification":
        classes = [str(c) for c in signature.get("classes", [])]
        if values.ndim != 2 or values.shape[1] != len(classes):
            raise OperationFailed(f"output '{output}' has shape {list(values.shape)}; a "
                                  f"classifier gives [rows, {len(classes)}], one column per "
                                  f"class of {classes}")
        index = {c: i for i, c in enumerate(classes)}
        labels = label_strings(table, target)
        y = np.array([index.get(labels[i] or "", -1) for i in rows], dtype=np.int64)
        return compute_metrics("classification", y, _finite(values), names)
    if values.size != len(rows):
        raise OperationFailed(f"output '{output}' has shape {list(values.shape)}; a regressor "
                              "gives one value per row")
    y_reg = np.asarray(table.columns[target], dtype=np.float64)[rows]
    predicted = values.reshape(-1).astype(np.float64)
    # A row the model answers with NaN (a missing input it does not impute) is scored as
    # the mean target: no better than knowing nothing, never a NaN metric.
    predicted = np.where(np.isfinite(predicted), predicted, float(y_reg.mean()))
    return compute_metrics("regression", y_reg, predicted, names)


def _finite(probabilities: np.ndarray) -> np.ndarray:
    """Rows of NaN or infinite probabilities (a missing input the model does not impute)
    scored as a uniform guess: wrong unless by chance, never a NaN metric."""
    out = probabilities.astype(np.float64)
    bad = ~np.isfinite(out).all(axis=1)
    out[bad] = 1.0 / max(1, out.shape[1])
    return out
