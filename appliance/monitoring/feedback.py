"""Delayed labels: ground truth joined to served predictions by request id.

A feedback file is CSV with the columns ``request_id`` and ``label`` (and
optionally ``row``, for a request that sent several rows; default 0). The
whole file is checked before anything is written: a malformed line fails it,
naming the line. Request ids the model never answered are not stored and are
counted in the result (or, with ``strict``, fail the file). A label given
again for the same request replaces the earlier one.

Which request a label belongs to: a client that retries may send the same
request id several times, so a label is joined to exactly one request per
(model, request id): the latest one the model answered (status < 400) that was
not a shadow copy (route != 'shadow'), latest by arrival time, then by log
order. Every reader of labels (metrics here, the monitoring check, the
retraining rows) uses that one rule, ``LABELLED_REQUEST``, so a retried request
counts once, never once per attempt.

Performance needs the prediction too, so only labels whose request's outputs
the request log kept enter the metrics. It keeps every request's up to
``serving.log_rows_per_second`` rows a second, so below that every label joins;
beyond it a weighted sample is kept, and a labelled row weighs in the metrics what
its request's row weighs (1 / its chance of being kept). Labels of requests whose
outputs were not kept are stored all the same, and counted as ``unsampled``.

Audit: labels live in monitoring.db and the audit log in appliance.db, and
SQLite does not commit two attached WAL databases atomically. So the order
makes the one guarantee that matters, no stored labels without their audit
entry: while holding monitoring.db's write lock (so nothing changes what is
about to be stored), the ``feedback.add`` entry, with the counts about to be
stored and a SHA-256 digest of the batch, commits to appliance.db first in its
own transaction; only then are the labels written and committed. If storing
them fails, a ``feedback.add.failed`` entry follows. A crash between the two
commits leaves an audit entry for labels that are not there, which the digest
and the feedback table show; never labels no one can account for.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import sqlite3
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from appliance import audit
from appliance.drift.performance import classification_metrics, regression_metrics
from appliance.errors import BadInput, StorageError
from appliance.monitoring.traffic import Window
from appliance.registry import ModelVersion, resolve
from appliance.storage.db import Database, immediate
from appliance.storage.home import Home

_TRUE = {"true", "yes", "1", "1.0"}
_FALSE = {"false", "no", "0", "0.0"}
MAX_NAMED_LINES = 5

# The id of the one request a label ``f`` (a feedback row) belongs to; see the module
# docstring. Readers join ``requests r ON r.id = (LABELLED_REQUEST)``.
LABELLED_REQUEST = (
    "SELECT a.id FROM requests a WHERE a.request_id = f.request_id AND a.model = f.model"
    " AND a.status < 400 AND a.route != 'shadow' ORDER BY a.ts DESC, a.id DESC LIMIT 1")


@dataclass(frozen=True)
class FeedbackResult:
    model: str
    lines: int
    stored: int
    replaced: int
    unknown: int  # request ids the model never answered: not stored
    unknown_examples: list[str]
    unsampled: int  # stored, but the request log did not keep the request's prediction

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def normalise_label(mv: ModelVersion, text: str) -> str:
    """The label as the model's classes spell it (or a number for a regressor)."""
    value = text.strip()
    if mv.signature.get("task") == "regression":
        try:
            number = float(value)
        except ValueError:
            raise BadInput(f"label {value!r} is not a number") from None
        if not math.isfinite(number):
            raise BadInput(f"label {value!r} is not a finite number")
        return format(number, "g")
    classes = [str(c) for c in mv.signature.get("classes", [])]
    if not classes:
        return value
    if value in classes:
        return value
    if set(classes) == {"false", "true"}:
        word = value.lower()
        if word in _TRUE:
            return "true"
        if word in _FALSE:
            return "false"
    try:  # a numeric class written another way ("1" for "1.0")
        as_number = format(float(value), "g")
    except ValueError:
        as_number = None
    if as_number is not None and as_number in classes:
        return as_number
    raise BadInput(f"label {value!r} is not a class of {mv.ref} ({', '.join(classes[:10])})")


def _parse(mv: ModelVersion, text: str, source: str) -> list[tuple[int, str, int, str]]:
    """(line, request_id, row, label) per data line; BadInput naming the bad lines."""
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise BadInput(f"{source}: empty file; expected a header 'request_id,label'") from None
    except csv.Error as exc:
        raise BadInput(f"{source}: line 1: {exc}") from exc
    missing = [c for c in ("request_id", "label") if c not in header]
    if missing:
        raise BadInput(f"{source}: the header lacks column(s) {', '.join(missing)} "
                       f"(found: {', '.join(header)})")
    col_id, col_label = header.index("request_id"), header.index("label")
    col_row = header.index("row") if "row" in header else None
    rows: list[tuple[int, str, int, str]] = []
    bad: list[str] = []
    seen: dict[tuple[str, int], int] = {}
    try:
        for record in reader:
            line = reader.line_num
            if not record or all(not c.strip() for c in record):
                continue
            if len(record) != len(header):
                bad.append(f"line {line}: {len(record)} fields, expected {len(header)}")
                continue
            request_id = record[col_id].strip()
            if not request_id:
                bad.append(f"line {line}: empty request_id")
                continue
            row = 0
            if col_row is not None and record[col_row].strip():
                try:
                    row = int(record[col_row])
                except ValueError:
                    row = -1
                if row < 0:
                    bad.append(f"line {line}: row {record[col_row]!r} is not an integer >= 0")
                    continue
            try:
                label = normalise_label(mv, record[col_label])
            except BadInput as exc:
                bad.append(f"line {line}: {exc}")
                continue
            if (request_id, row) in seen:
                bad.append(f"line {line}: request {request_id} row {row} repeats line "
                           f"{seen[(request_id, row)]}")
                continue
            seen[(request_id, row)] = line
            rows.append((line, request_id, row, label))
    except csv.Error as exc:
        bad.append(f"line {reader.line_num}: {exc}")
    if bad:
        more = f" (and {len(bad) - MAX_NAMED_LINES} more)" if len(bad) > MAX_NAMED_LINES else ""
        raise BadInput(f"{source}: {len(bad)} bad line(s), nothing stored: "
                       + "; ".join(bad[:MAX_NAMED_LINES]) + more)
    return rows


def add_feedback(home: Home, name: str, path: str | Path, *, actor: str,
                 strict: bool = False) -> FeedbackResult:
    """Store the labels of CSV file ``path`` for model ``name``; see the module docstring."""
    file = Path(path)
    try:
        text = file.read_bytes().decode("utf-8-sig")
    except FileNotFoundError as exc:
        raise BadInput(f"{file}: no such file") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"{file}: can not be read as UTF-8 text: {exc}") from exc
    return add_feedback_text(home, name, text, source=str(file), actor=actor, strict=strict)


def add_feedback_records(home: Home, name: str, records: Any, *, actor: str,
                         strict: bool = False) -> FeedbackResult:
    """The JSON API's form: ``[{"request_id": ..., "label": ..., "row"?: ...}, ...]``."""
    if not isinstance(records, list) or not records:
        raise BadInput("feedback must be a non-empty list of {request_id, label, row?}")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["request_id", "label", "row"])
    for i, rec in enumerate(records):
        if not isinstance(rec, Mapping) or set(rec) - {"request_id", "label", "row"}:
            raise BadInput(f"feedback[{i}]: expected an object with request_id, label and "
                           "optionally row")
        writer.writerow([rec.get("request_id", ""), rec.get("label", ""), rec.get("row", "")])
    return add_feedback_text(home, name, buffer.getvalue(), source="feedback", actor=actor,
                             strict=strict)


def add_feedback_text(home: Home, name: str, text: str, *, source: str, actor: str,
                      strict: bool = False) -> FeedbackResult:
    """Check every line, audit the batch, then store the labels of known requests in one
    transaction; see the module docstring for the order and why."""
    with home.db() as db:
        mv = resolve(db, name)
    parsed = _parse(mv, text, source)
    target = f"model:{mv.name}"
    audited = False
    mon = home.monitoring_db()
    try:
        with immediate(mon):
            known: dict[str, tuple[int, bool]] = {}
            unknown: list[str] = []
            for _, request_id, row, _ in parsed:
                if request_id not in known:
                    hit = mon.execute(
                        "SELECT rows, outputs IS NOT NULL FROM requests"
                        " WHERE request_id = ? AND model = ? AND status < 400"
                        " AND route != 'shadow' ORDER BY ts DESC, id DESC LIMIT 1",
                        [request_id, mv.name]).fetchone()
                    known[request_id] = (int(hit[0]), bool(hit[1])) if hit is not None \
                        else (0, False)
                rows, _sampled = known[request_id]
                if row >= rows:
                    unknown.append(request_id if row == 0 else f"{request_id}#{row}")
            if unknown and strict:
                raise BadInput(f"{source}: {len(unknown)} request id(s) were never answered by "
                               f"{mv.name} (first: {', '.join(unknown[:3])}); nothing stored")
            bad_ids = set(unknown)
            batch = [(request_id, row, label) for _, request_id, row, label in parsed
                     if (request_id if row == 0 else f"{request_id}#{row}") not in bad_ids]
            replaced = sum(
                mon.execute("SELECT 1 FROM feedback WHERE model = ? AND request_id = ?"
                            " AND row = ?", [mv.name, request_id, row]).fetchone() is not None
                for request_id, row, _ in batch)
            unsampled = sum(not known[request_id][1] for request_id, _, _ in batch)
            details = {"source": Path(source).name, "stored": len(batch), "replaced": replaced,
                       "unknown": len(unknown), "unsampled": unsampled,
                       "sha256": _digest(batch)}
            try:
                _audit(home, actor, "feedback.add", target, details)
            except sqlite3.Error as exc:
                raise StorageError(f"{source}: the audit entry could not be written, nothing "
                                   f"was stored: {exc}") from exc
            audited = True
            now = time.time()
            mon.conn.executemany(
                "INSERT INTO feedback (model, request_id, row, label, received_at,"
                " received_by) VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (model, request_id, row) DO UPDATE SET label = excluded.label,"
                " received_at = excluded.received_at, received_by = excluded.received_by",
                [(mv.name, request_id, row, label, now, actor)
                 for request_id, row, label in batch])
    except (sqlite3.Error, StorageError) as exc:
        if not audited:
            raise
        _audit(home, actor, "feedback.add.failed", target,
               {"sha256": details["sha256"], "error": str(exc)})
        raise StorageError(f"{source}: the labels could not be stored, nothing was stored: "
                           f"{exc}") from exc
    finally:
        mon.close()
    return FeedbackResult(mv.name, len(parsed), len(batch), replaced, len(unknown),
                          unknown[:5], unsampled)


def _digest(batch: list[tuple[str, int, str]]) -> str:
    """SHA-256 of the labels stored, in file order: one ``request_id,row,label`` CSV line each."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(batch)
    return hashlib.sha256(buffer.getvalue().encode("utf-8")).hexdigest()


def _audit(home: Home, actor: str, action: str, target: str, details: dict[str, Any]) -> None:
    """One audit entry in its own committed transaction on appliance.db."""
    with home.db() as db:
        with immediate(db):
            audit.append(db, actor=actor, action=action, target=target, details=details)


@dataclass
class Labelled:
    """Labelled, kept predictions of one version in a window, oldest first."""

    version: int
    ts: np.ndarray
    labels: list[str]
    outputs: list[Any]  # per row: class probabilities, or the predicted number
    weights: list[float] = field(default_factory=list)  # per row: its request's weight


def labelled(mon: Database, model: str, window: Window,
             names: tuple[str, str] = ("probabilities", "prediction")) -> dict[int, Labelled]:
    """Feedback joined to the kept outputs of the window, per served version; each label
    to its one request (``LABELLED_REQUEST``), counted when that request is in the window.
    ``names``: the outputs holding the class probabilities and the regression prediction."""
    found: dict[int, Labelled] = {}
    for ts, version, row, label, outputs, weight in mon.execute(
        "SELECT r.ts, r.version, f.row, f.label, r.outputs, COALESCE(r.weight, 1.0)"
        " FROM feedback f"
        f" JOIN requests r ON r.id = ({LABELLED_REQUEST})"
        " WHERE f.model = ? AND r.ts >= ? AND r.ts < ? AND r.outputs IS NOT NULL"
        " ORDER BY r.ts, r.id, f.row",
        [model, window.start, window.end],
    ):
        try:
            outs = json.loads(outputs)
        except ValueError:
            continue
        value = _output_row(outs, int(row), names)
        if value is None:
            continue
        entry = found.setdefault(int(version), Labelled(int(version), np.empty(0), [], []))
        entry.labels.append(label)
        entry.outputs.append(value)
        entry.weights.append(float(weight))
        entry.ts = np.append(entry.ts, float(ts))
    return found


def _output_row(outs: Mapping[str, Any], row: int, names: tuple[str, str]) -> Any:
    for i, key in enumerate(names):
        values = outs.get(key)
        if isinstance(values, list) and row < len(values):
            v = values[row]
            return v[0] if i == 1 and isinstance(v, list) else v
    return None


def performance(mv: ModelVersion, data: Labelled) -> tuple[dict[str, float], np.ndarray]:
    """Metrics of a labelled window, each row weighted by its request's weight, and its
    error stream (1/0 mistakes, or absolute errors), one per kept row in order, unweighted:
    the detectors that read it see the kept rows as they came."""
    w = np.array(data.weights, dtype=np.float64) if data.weights else None
    if mv.signature.get("task") == "regression":
        y = np.array([float(v) for v in data.labels])
        pred = np.array([float(v) for v in data.outputs])
        return regression_metrics(y, pred, w), np.abs(y - pred)
    classes = [str(c) for c in mv.signature.get("classes", [])]
    index = {c: i for i, c in enumerate(classes)}
    probs = np.array(data.outputs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] != len(classes):
        raise BadInput(f"kept outputs of {mv.ref} do not match its {len(classes)} classes")
    y = np.array([index.get(lab, -1) for lab in data.labels])
    predicted = probs.argmax(axis=1)
    errors = (predicted != y).astype(np.float64)
    if len(classes) == 2:
        metrics = classification_metrics((y == 1).astype(np.float64), probs[:, 1], weights=w)
    else:
        ww = np.ones(len(y)) if w is None else w
        picked = np.where(y >= 0, probs[np.arange(len(y)), np.clip(y, 0, None)], 0.0)
        f1s = []
        for c in range(len(classes)):
            tp = float(ww[(predicted == c) & (y == c)].sum())
            wrong = float(ww[(predicted == c) ^ (y == c)].sum())
            f1s.append(2 * tp / (2 * tp + wrong) if tp + wrong else 0.0)
        if w is None:
            accuracy = float(1.0 - errors.mean())
            log_loss = float(-np.log(np.clip(picked, 1e-15, 1.0)).mean())
        else:
            accuracy = float(1.0 - np.sum(errors * w) / w.sum())
            log_loss = float(-np.sum(np.log(np.clip(picked, 1e-15, 1.0)) * w) / w.sum())
        metrics = {"accuracy": accuracy, "log_loss": log_loss,
                   "f1_macro": float(np.mean(f1s)), "count": float(len(y))}
    return metrics, errors
