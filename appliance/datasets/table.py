"""Reading a CSV file into typed columns, refusing what is malformed.

A column's type is decided by the first ``infer_rows`` rows: ``boolean``
(true/false/yes/no), ``numeric`` (finite numbers), ``timestamp`` (ISO 8601
dates and times) or ``categorical`` (anything else). Every later row must fit
the type decided, so a stray word deep in a numeric column is an error that
names its line and column rather than a column silently turned into text.
Empty cells and ``NA``/``NaN``/``null``/``None``/``N/A`` are missing values.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from appliance.errors import BadInput

TYPES = ("numeric", "categorical", "boolean", "timestamp")
MISSING = frozenset({"", "na", "nan", "null", "none", "n/a"})
_TRUE = frozenset({"true", "yes"})
_FALSE = frozenset({"false", "no"})


@dataclass
class Table:
    """Columns of one file. numeric, boolean and timestamp columns are float64 arrays
    (NaN for missing; booleans 0/1; timestamps seconds since the epoch, UTC);
    categorical columns are lists of str, None for missing."""

    names: list[str]
    types: dict[str, str]
    columns: dict[str, Any]
    row_count: int

    def schema(self) -> list[dict[str, str]]:
        return [{"name": n, "type": self.types[n]} for n in self.names]


def is_missing(cell: str) -> bool:
    return cell.strip().lower() in MISSING


def _number(cell: str) -> float | None:
    try:
        value = float(cell)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _boolean(cell: str) -> float | None:
    word = cell.strip().lower()
    if word in _TRUE:
        return 1.0
    if word in _FALSE:
        return 0.0
    return None


def _timestamp(cell: str) -> float | None:
    text = cell.strip()
    if "-" not in text[1:] or len(text) < 8:
        return None  # a bare number is not a date
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


_PARSERS = {"numeric": _number, "boolean": _boolean, "timestamp": _timestamp}
_WHAT = {"numeric": "a number", "boolean": "true/false/yes/no", "timestamp": "an ISO 8601 time"}


def infer_type(cells: list[str]) -> str:
    present = [c for c in cells if not is_missing(c)]
    if not present:
        return "categorical"
    for kind in ("boolean", "numeric", "timestamp"):
        parse = _PARSERS[kind]
        if all(parse(c) is not None for c in present):
            return kind
    return "categorical"


def _rows(text: str, source: str) -> Iterator[tuple[int, list[str]]]:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        for row in reader:
            yield reader.line_num, row
    except csv.Error as exc:
        raise BadInput(f"{source}: line {reader.line_num}: malformed CSV ({exc})") from exc


def parse_csv(
    data: bytes,
    *,
    source: str,
    infer_rows: int = 1000,
    types: dict[str, str] | None = None,
) -> Table:
    """Parse and type a CSV file's bytes; ``types`` skips inference (a recorded schema)."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BadInput(f"{source}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from exc
    rows = _rows(text, source)
    header_line = next(rows, None)
    if header_line is None or not any(c.strip() for c in header_line[1]):
        raise BadInput(f"{source}: the file is empty; expected a header line and rows")
    names = [c.strip() for c in header_line[1]]
    for i, name in enumerate(names):
        if not name:
            raise BadInput(f"{source}: line 1, column {i + 1}: empty column name in the header")
        if names.index(name) != i:
            raise BadInput(f"{source}: line 1: column '{name}' appears twice in the header")
    body: list[tuple[int, list[str]]] = []
    for line, row in rows:
        if not row or (len(row) == 1 and not row[0].strip() and len(names) > 1):
            continue  # blank line
        if len(row) != len(names):
            raise BadInput(
                f"{source}: line {line}: {len(row)} fields, but the header has {len(names)}"
            )
        body.append((line, row))
    if not body:
        raise BadInput(f"{source}: the file has a header but no rows")
    if types is None:
        sample = body[:infer_rows]
        types = {n: infer_type([r[i] for _, r in sample]) for i, n in enumerate(names)}
    else:
        unknown = [n for n in names if n not in types] + [n for n in types if n not in names]
        if unknown:
            raise BadInput(f"{source}: columns {unknown} do not match the recorded schema")
    columns: dict[str, Any] = {}
    for i, name in enumerate(names):
        kind = types[name]
        if kind == "categorical":
            columns[name] = [None if is_missing(r[i]) else r[i] for _, r in body]
            continue
        parse = _PARSERS[kind]
        values = np.empty(len(body), dtype=np.float64)
        for j, (line, row) in enumerate(body):
            cell = row[i]
            if is_missing(cell):
                values[j] = np.nan
                continue
            parsed = parse(cell)
            if parsed is None:
                raise BadInput(
                    f"{source}: line {line}, column '{name}': {cell!r} is not {_WHAT[kind]}, "
                    f"but the first rows made '{name}' a {kind} column; fix the value or "
                    "mark it missing (empty)"
                )
            values[j] = parsed
        columns[name] = values
    return Table(names=names, types=dict(types), columns=columns, row_count=len(body))


def read_csv(path: Path, *, infer_rows: int = 1000) -> Table:
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise BadInput(f"{path}: no such file") from exc
    except OSError as exc:
        raise BadInput(f"{path}: can not be read: {exc.strerror}") from exc
    return parse_csv(data, source=str(path), infer_rows=infer_rows)
