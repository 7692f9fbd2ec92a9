"""Searching, sorting and comparing runs by their parameters, metrics and hashes.

Every run flattens to one mapping of dotted fields: ``id``, ``status``, ``model``,
``version``, ``dataset``, ``seed``, ``device``, ``sweep``, the hashes, ``params.NAME``
and its metrics by split (``test.accuracy``, ``validation.f1_macro``, ``rows.test``,
``script.val_loss``, ``parity_max_abs_diff``). A filter is a small expression over
these fields, parsed here, never evaluated as Python::

    test.accuracy > 0.95 and params.lr = 0.002
    (status = failed or test.rmse >= 3) and not model = churn

A comparison with a field a run does not have is false for that run.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from appliance.errors import BadInput
from appliance.storage.db import Database

Predicate = Callable[[dict[str, Any]], bool]

_TOKEN = re.compile(r"""
    \s*(?:
      (?P<num>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)(?![\w.])
    | (?P<str>'[^']*'|"[^"]*")
    | (?P<op><=|>=|!=|==|=|<|>)
    | (?P<paren>[()])
    | (?P<word>[A-Za-z_][\w.\-/]*)
    )""", re.X)
_OPS = {"=", "==", "!=", "<", "<=", ">", ">="}
DEFAULT_COLUMNS = ("id", "status", "version", "started")


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for key, inner in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), inner, out)
    else:
        out[prefix] = value


def flat_run(row: dict[str, Any]) -> dict[str, Any]:
    """One runs row (with ``model_version`` and ``dataset`` joined) as dotted fields."""
    out: dict[str, Any] = {
        "id": row["id"], "status": row["status"], "model": row["model_name"],
        "version": row.get("model_version"), "dataset": row.get("dataset"),
        "seed": row["seed"], "device": row["device"], "sweep": row.get("sweep_id"),
        "started": row["started_at"], "ended": row["ended_at"], "actor": row["actor"],
        "code_hash": row["code_hash"], "env_hash": row["env_hash"],
        "data_hash": row["dataset_digest"],
        "weights_hash": row.get("weights_digest"),
    }
    _flatten("params", json.loads(row["params"]), out)
    _flatten("", json.loads(row["metrics"]), out)
    return out


# --- the expression parser -----------------------------------------------------------------


def _tokens(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            raise BadInput(f"--where: can not read {text[pos:].strip()[:20]!r} "
                           f"(at character {pos + 1})")
        kind = match.lastgroup or ""
        value = match.group(kind)
        if kind == "word" and value.lower() in ("and", "or", "not"):
            kind, value = "keyword", value.lower()
        tokens.append((kind, value))
        pos = match.end()
    return tokens


@dataclass
class _Parser:
    tokens: list[tuple[str, str]]
    pos: int = 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> tuple[str, str]:
        token = self.peek()
        if token is None:
            raise BadInput("--where: the expression ends too early")
        self.pos += 1
        return token

    def expression(self) -> Predicate:
        left = self.term()
        while self.peek() == ("keyword", "or"):
            self.take()
            right = self.term()
            left = (lambda a, b: lambda run: a(run) or b(run))(left, right)
        return left

    def term(self) -> Predicate:
        left = self.factor()
        while self.peek() == ("keyword", "and"):
            self.take()
            right = self.factor()
            left = (lambda a, b: lambda run: a(run) and b(run))(left, right)
        return left

    def factor(self) -> Predicate:
        token = self.take()
        if token == ("keyword", "not"):
            inner = self.factor()
            return lambda run: not inner(run)
        if token == ("paren", "("):
            inner = self.expression()
            if self.peek() != ("paren", ")"):
                raise BadInput("--where: a '(' is not closed")
            self.take()
            return inner
        if token[0] != "word":
            raise BadInput(f"--where: expected a field name, found {token[1]!r}")
        field = token[1]
        op = self.take()
        if op[0] != "op":
            raise BadInput(f"--where: expected one of = != < <= > >= after '{field}', "
                           f"found {op[1]!r}")
        kind, raw = self.take()
        if kind == "num":
            value: Any = float(raw)
        elif kind == "str":
            value = raw[1:-1]
        elif kind == "word":
            value = raw
        else:
            raise BadInput(f"--where: expected a value after '{field} {op[1]}', found {raw!r}")
        return _comparison(field, op[1], value)


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _comparison(field: str, op: str, wanted: Any) -> Predicate:
    def check(run: dict[str, Any]) -> bool:
        if field not in run or run[field] is None:
            return False
        have = run[field]
        left: Any
        right: Any
        if isinstance(wanted, float):
            number = _number(have)
            if number is None:
                return False
            left, right = number, wanted
            if op in ("=", "=="):
                return abs(left - right) <= 1e-12 * max(1.0, abs(right))
            if op == "!=":
                return abs(left - right) > 1e-12 * max(1.0, abs(right))
        else:
            left, right = str(have).lower() if isinstance(have, bool) else str(have), wanted
            if op in ("=", "=="):
                return left == right
            if op == "!=":
                return left != right
        if op == "<":
            return left < right
        if op == "<=":
            return left <= right
        if op == ">":
            return left > right
        return left >= right

    return check


def parse_where(text: str) -> Predicate:
    """A predicate over flattened runs; BadInput naming what could not be read."""
    tokens = _tokens(text)
    if not tokens:
        raise BadInput("--where: the expression is empty")
    parser = _Parser(tokens)
    predicate = parser.expression()
    if parser.peek() is not None:
        raise BadInput(f"--where: unexpected {parser.peek()[1]!r} "  # type: ignore[index]
                       "(join conditions with 'and' or 'or')")
    return predicate


def sort_key(spec: str) -> list[tuple[str, bool]]:
    """``-test.accuracy,id``: fields, each descending when it starts with '-'."""
    keys = []
    for part in spec.split(","):
        part = part.strip()
        if not part or part in ("-", "+"):
            raise BadInput(f"--sort: {spec!r} names an empty field")
        keys.append((part.lstrip("+-"), part.startswith("-")))
    return keys


def _sorted(runs: list[dict[str, Any]], keys: list[tuple[str, bool]]) -> list[dict[str, Any]]:
    # Stable sorts from the last key to the first; a run without the field goes last.
    for field, descending in reversed(keys):
        present = [r for r in runs if r.get(field) is not None]
        missing = [r for r in runs if r.get(field) is None]
        numeric = all(_number(r[field]) is not None for r in present)
        keyed: list[tuple[Any, dict[str, Any]]] = [
            (_number(r[field]) if numeric else str(r[field]), r) for r in present]
        keyed.sort(key=lambda pair: pair[0], reverse=descending)
        present = [r for _k, r in keyed]
        runs = present + missing
    return runs


_RUNS = (
    "SELECT r.*, (SELECT d.name || '@' || dv.version FROM dataset_versions dv"
    "  JOIN datasets d ON d.id = dv.dataset_id WHERE dv.id = r.dataset_version_id) AS dataset,"
    " (SELECT m.name || '@' || mv.version FROM model_versions mv JOIN models m"
    "  ON m.id = mv.model_id WHERE mv.run_id = r.id) AS model_version FROM runs r")


def search_runs(db: Database, *, where: str | None = None,
                sort: str | None = None, sweep: int | None = None,
                limit: int | None = 50) -> list[dict[str, Any]]:
    """Runs as flattened fields, filtered, sorted (default: newest first) and cut to
    ``limit``."""
    predicate = parse_where(where) if where else None
    keys = sort_key(sort) if sort else [("id", True)]
    query, args = _RUNS, []
    if sweep is not None:
        query += " WHERE r.sweep_id = ?"
        args.append(sweep)
    runs = [flat_run(row) for row in db.query(query + " ORDER BY r.id DESC", args)]
    if predicate is not None:
        runs = [r for r in runs if predicate(r)]
    runs = _sorted(runs, keys)
    return runs if limit is None else runs[:limit]


def compare_runs(db: Database, run_ids: list[int]) -> list[dict[str, Any]]:
    """Every field of the given runs side by side: ``{field, values, differs}`` rows,
    identity and hashes first, then parameters, then metrics."""
    if len(run_ids) < 2:
        raise BadInput("runs compare needs at least two runs")
    found = {r["id"]: flat_run(r) for r in db.query(
        _RUNS + f" WHERE r.id IN ({', '.join('?' for _ in run_ids)})", run_ids)}
    missing = [i for i in run_ids if i not in found]
    if missing:
        raise BadInput(f"run {missing[0]} does not exist; see 'appliance runs list'")
    runs = [found[i] for i in run_ids]
    head = ["id", "status", "model", "version", "dataset", "data_hash", "code_hash",
            "env_hash", "weights_hash", "seed", "device", "sweep"]
    fields = list(head)
    rest = sorted({k for r in runs for k in r} - set(head) - {"started", "ended", "actor"},
                  key=lambda k: (not k.startswith("params."), k))
    fields += rest
    rows = []
    for field in fields:
        values = [r.get(field) for r in runs]
        rows.append({"field": field, "values": values,
                     "differs": field != "id" and len({json.dumps(v) for v in values}) > 1})
    return rows
