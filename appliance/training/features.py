"""Turning table columns into model inputs, and the metrics of each task.

The encoding (means, standard deviations, category vocabularies, classes) is
fitted on the training split only and becomes part of the exported graph, so
the ONNX model takes the raw columns: numeric and boolean columns as FP32
``[-1, 1]`` (NaN for missing), categorical ones as BYTES ``[-1, 1]`` (an
unseen or empty category encodes as all zeros).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from appliance.datasets.table import Table
from appliance.errors import BadInput


@dataclass(frozen=True)
class Feature:
    name: str
    kind: str  # "numeric" or "categorical" (the model's view)
    source_type: str  # the dataset column's type
    mean: float = 0.0
    std: float = 1.0
    vocabulary: tuple[str, ...] = ()


@dataclass(frozen=True)
class Encoding:
    task: str
    target: str
    features: tuple[Feature, ...]
    classes: tuple[str, ...] = ()
    target_mean: float = 0.0
    target_std: float = 1.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def choose_features(table: Table, target: str, wanted: list[str] | None) -> list[str]:
    if target not in table.types:
        raise BadInput(f"target column '{target}' is not in the dataset "
                       f"(columns: {', '.join(table.names)})")
    if wanted is None:
        chosen = [n for n in table.names if n != target and table.types[n] != "timestamp"]
    else:
        chosen = list(wanted)
        for name in chosen:
            if name not in table.types:
                raise BadInput(f"recipe field 'features': column '{name}' is not in the dataset")
            if name == target:
                raise BadInput(f"recipe field 'features': '{name}' is the target")
            if table.types[name] == "timestamp":
                raise BadInput(f"recipe field 'features': '{name}' is a timestamp column, which "
                               "the built-in templates do not take")
        if len(set(chosen)) != len(chosen):
            raise BadInput("recipe field 'features' names a column twice")
    if not chosen:
        raise BadInput("the recipe leaves no feature columns to train on")
    return chosen


def label_strings(table: Table, column: str) -> list[str | None]:
    values = table.columns[column]
    if table.types[column] == "categorical":
        return list(values)
    if table.types[column] == "boolean":
        return [None if math.isnan(v) else ("true" if v else "false") for v in values]
    return [None if math.isnan(v) else format(float(v), "g") for v in values]


def labelled_rows(table: Table, target: str, task: str) -> np.ndarray:
    """Indices of the rows whose target is present (the others can not train)."""
    if task == "regression":
        if table.types[target] not in ("numeric", "boolean"):
            raise BadInput(f"target '{target}' is {table.types[target]}; a regression template "
                           "needs a numeric target")
        return np.flatnonzero(~np.isnan(table.columns[target]))
    labels = label_strings(table, target)
    return np.array([i for i, v in enumerate(labels) if v is not None], dtype=np.int64)


def fit_encoding(table: Table, target: str, features: list[str], task: str,
                 train: np.ndarray) -> Encoding:
    specs = []
    for name in features:
        source = table.types[name]
        if source == "categorical":
            values = table.columns[name]
            vocab = sorted({values[i] for i in train if values[i] is not None})
            if not vocab:
                raise BadInput(f"feature column '{name}' has no values in the training split; "
                               "leave it out of the recipe's features")
            specs.append(Feature(name, "categorical", source, vocabulary=tuple(vocab)))
        else:
            col = table.columns[name][train]
            present = col[~np.isnan(col)]
            mean = float(present.mean()) if len(present) else 0.0
            std = float(present.std()) if len(present) else 1.0
            specs.append(Feature(name, "numeric", source, mean=mean, std=std if std > 0 else 1.0))
    if task == "classification":
        labels = label_strings(table, target)
        classes = tuple(sorted({labels[i] for i in train if labels[i] is not None}))
        if len(classes) < 2:
            raise BadInput(f"target '{target}' has {len(classes)} class in the training split; "
                           "classification needs at least 2")
        return Encoding(task, target, tuple(specs), classes=classes)
    y = table.columns[target][train]
    std = float(y.std())
    return Encoding(task, target, tuple(specs), target_mean=float(y.mean()),
                    target_std=std if std > 0 else 1.0)


def model_inputs(table: Table, enc: Encoding, rows: np.ndarray) -> list[np.ndarray]:
    """What the torch module takes: FP32 ``[n, 1]`` per numeric feature, INT64 codes
    (-1 unseen) per categorical one."""
    out = []
    for f in enc.features:
        if f.kind == "numeric":
            out.append(table.columns[f.name][rows].astype(np.float32).reshape(-1, 1))
        else:
            index = {v: i for i, v in enumerate(f.vocabulary)}
            values = table.columns[f.name]
            codes = [index.get(values[i], -1) if values[i] is not None else -1 for i in rows]
            out.append(np.array(codes, dtype=np.int64).reshape(-1, 1))
    return out


def raw_inputs(table: Table, enc: Encoding, rows: np.ndarray) -> dict[str, np.ndarray]:
    """What the exported ONNX model takes: the raw columns."""
    feeds: dict[str, np.ndarray] = {}
    for f in enc.features:
        if f.kind == "numeric":
            feeds[f.name] = table.columns[f.name][rows].astype(np.float32).reshape(-1, 1)
        else:
            values = table.columns[f.name]
            feeds[f.name] = np.array([values[i] or "" for i in rows], dtype=object).reshape(-1, 1)
    return feeds


def targets(table: Table, enc: Encoding, rows: np.ndarray) -> np.ndarray:
    if enc.task == "classification":
        labels = label_strings(table, enc.target)
        index = {c: i for i, c in enumerate(enc.classes)}
        # A class absent from the training split can not be predicted; it counts as wrong.
        return np.array([index.get(labels[i] or "", -1) for i in rows], dtype=np.int64)
    return table.columns[enc.target][rows].astype(np.float32)


def roc_auc(y: np.ndarray, probabilities: np.ndarray) -> float | None:
    """Area under the ROC curve: of class 1 for two classes, else the macro average over
    the classes one-vs-rest (the classes present with both positives and negatives); the
    Mann-Whitney statistic with ties counting one half. None when no class qualifies."""
    from scipy.stats import rankdata

    known = y >= 0
    y, probabilities = y[known], probabilities[known]
    columns = [1] if probabilities.shape[1] == 2 else range(probabilities.shape[1])
    areas = []
    for c in columns:
        positive = y == c
        n_pos = float(positive.sum())
        n_neg = float(len(y) - n_pos)
        if n_pos == 0 or n_neg == 0:
            continue
        ranks = rankdata(probabilities[:, c])
        areas.append((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
    return float(np.mean(areas)) if areas else None


def compute_metrics(task: str, y: np.ndarray, output: np.ndarray,
                    names: list[str] | None) -> dict[str, float]:
    """``output``: class probabilities ``[n, C]`` or predictions ``[n]``."""
    result: dict[str, float] = {}
    if len(y) == 0:
        return result
    if task == "classification":
        predicted = output.argmax(axis=1)
        result["accuracy"] = float((predicted == y).mean())
        picked = np.where(y >= 0, output[np.arange(len(y)), np.clip(y, 0, None)], 0.0)
        result["log_loss"] = float(-np.log(np.clip(picked, 1e-15, 1.0)).mean())
        f1s = []
        for c in range(output.shape[1]):
            tp = float(((predicted == c) & (y == c)).sum())
            fp = float(((predicted == c) & (y != c)).sum())
            fn = float(((predicted != c) & (y == c)).sum())
            f1s.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
        result["f1_macro"] = float(np.mean(f1s))
        auc = roc_auc(y, output)
        if auc is not None:
            result["roc_auc"] = auc
    else:
        err = output.astype(np.float64) - y.astype(np.float64)
        result["rmse"] = float(np.sqrt((err**2).mean()))
        result["mae"] = float(np.abs(err).mean())
        var = float(((y - y.mean()) ** 2).sum())
        result["r2"] = float(1.0 - (err**2).sum() / var) if var > 0 else 0.0
    if names is not None:
        result = {k: v for k, v in result.items() if k in names}
    return result
