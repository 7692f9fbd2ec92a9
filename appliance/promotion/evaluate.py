"""Scoring ONNX models on a held-out set, checking that set's quality, and timing a model.

The held-out set is the candidate's own test split: the rows of its dataset
version that its run kept out of training, chosen again from the run's
recorded split and seed. Candidate and production are both scored on exactly
these rows, through their ONNX files on the CPU, so their metrics compare
like with like even when production was trained on other data.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from appliance.datasets import get_dataset_version, load_table
from appliance.datasets.table import Table
from appliance.errors import BadInput
from appliance.onnxtools.sessions import cpu_session
from appliance.registry import ModelVersion
from appliance.storage.db import Database
from appliance.storage.home import Home
from appliance.training import get_run, scoring
from appliance.training.features import labelled_rows
from appliance.training.trainer import split_rows


@dataclass
class EvalSet:
    """The held-out rows of a dataset version, as a table and row indices."""

    dataset: str
    table: Table
    rows: np.ndarray
    target: str
    task: str


def evaluation_set(home: Home, db: Database, mv: ModelVersion) -> EvalSet:
    """The candidate's test split, or the labelled rows of an imported version's evaluation
    dataset; BadInput when it has neither."""
    if mv.run_id is None:
        return _imported_set(home, db, mv)
    run = get_run(db, mv.run_id)
    target = mv.signature.get("target")
    task = mv.signature.get("task")
    if not run.dataset or not target or task not in ("classification", "regression"):
        raise BadInput(f"{mv.ref}: its run records no dataset, target or task to evaluate on")
    dv = get_dataset_version(db, run.dataset)
    table = load_table(home.blobs, dv)
    split = run.recipe.get("split") or {"train": 0.7, "validation": 0.15, "test": 0.15}
    rows = split_rows(labelled_rows(table, target, task), split, run.seed)["test"]
    return EvalSet(dataset=run.dataset, table=table, rows=rows, target=target, task=task)


def _imported_set(home: Home, db: Database, mv: ModelVersion) -> EvalSet:
    target = mv.signature.get("target")
    task = mv.signature.get("task")
    if mv.dataset is None or not target or task not in ("classification", "regression"):
        raise BadInput(f"{mv.ref} was imported without an evaluation set; give it one with "
                       f"'appliance models attach {mv.ref} --eval DATASET' (a dataset "
                       "registered with --target)")
    dv = get_dataset_version(db, mv.dataset)
    table = load_table(home.blobs, dv)
    return EvalSet(dataset=dv.ref, table=table, rows=labelled_rows(table, target, task),
                   target=target, task=task)


def feeds_for(signature: dict[str, Any], table: Table, rows: np.ndarray) -> dict[str, np.ndarray]:
    """The model's raw inputs from the table's columns; OperationFailed when one is absent."""
    return scoring.feeds_for(signature, table, rows)


def score(data: bytes, signature: dict[str, Any], es: EvalSet) -> dict[str, float]:
    """A model's metrics on the evaluation set, as training computes them."""
    return scoring.score(data, signature, es.table, es.rows, es.task, es.target)


def data_quality(signature: dict[str, Any], profile: dict[str, Any] | None,
                 es: EvalSet) -> dict[str, Any]:
    """Missing share and share of values outside the training range, worst column each."""
    worst_missing, worst_missing_col = 0.0, ""
    worst_range, worst_range_col = 0.0, ""
    n = max(1, len(es.rows))
    columns = (profile or {}).get("columns", {})
    for name in scoring.input_columns(signature):
        if name not in es.table.columns:
            continue
        column = es.table.columns[name]
        if es.table.types.get(name) == "categorical":
            missing = sum(1 for i in es.rows if column[i] in (None, ""))
        else:
            values = np.asarray(column, dtype=np.float64)[es.rows]
            present = values[~np.isnan(values)]
            missing = int(len(values) - len(present))
            ref = columns.get(name, {})
            low, high = ref.get("min"), ref.get("max")
            if present.size and isinstance(low, (int, float)) and isinstance(high, (int, float)):
                share = float(((present < low) | (present > high)).sum()) / n
                if share > worst_range:
                    worst_range, worst_range_col = share, name
        if missing / n > worst_missing:
            worst_missing, worst_missing_col = missing / n, name
    return {"rows": int(len(es.rows)), "missing_share": worst_missing,
            "missing_column": worst_missing_col, "out_of_range_share": worst_range,
            "out_of_range_column": worst_range_col}


def _zeros(signature: dict[str, Any]) -> dict[str, np.ndarray]:
    feeds = {}
    for spec in signature.get("inputs", []):
        shape = tuple(1 if (d is None or d == -1 or isinstance(d, str)) else int(d)
                      for d in spec.get("shape", [-1, 1]))
        if spec["datatype"] == "BYTES":
            feeds[spec["name"]] = np.full(shape, "", dtype=object)
        else:
            feeds[spec["name"]] = np.zeros(shape, dtype=np.float32)
    return feeds


def load_test(data: bytes, signature: dict[str, Any], es: EvalSet | None, *, requests: int,
              warmup: int) -> dict[str, float]:
    """Time ``requests`` single-row runs of one session; p50/p99 in milliseconds."""
    session = cpu_session(data)
    outputs = [o["name"] for o in signature.get("outputs", [])] or None
    if es is not None and len(es.rows):
        rows = [feeds_for(signature, es.table, es.rows[i:i + 1])
                for i in range(min(len(es.rows), 64))]
    else:
        rows = [_zeros(signature)]
    for i in range(warmup):
        session.run(outputs, rows[i % len(rows)])
    times = []
    for i in range(requests):
        start = time.perf_counter()
        session.run(outputs, rows[i % len(rows)])
        times.append((time.perf_counter() - start) * 1000.0)
    times.sort()
    return {"requests": requests, "p50_ms": _quantile(times, 0.50),
            "p99_ms": _quantile(times, 0.99)}


def _quantile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return math.nan
    index = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return float(sorted_values[index])
