"""A categorical column's reference, and one counting pass of current data against it.

The reference is category counts: every category when built from raw values,
or a profile's top-k categories plus an ``other`` count. Current values are
counted with a hash table (no sorting), then laid onto the reference's cells:
the reference categories, then ``other`` (a profile's long tail, where a value
that is not in the top k lands) or, for a complete reference, one cell per
category never seen in the reference.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

OTHER = "(other)"


@dataclass(frozen=True)
class CategoricalReference:
    counts: dict[str, int]
    other: int  # present values outside ``counts`` (a profile's tail)
    n: int
    missing: int = 0
    unique: int = 0

    @property
    def complete(self) -> bool:
        """Every reference category is listed: unseen categories can be told apart."""
        return self.other == 0

    @classmethod
    def from_values(cls, values: Iterable[Any]) -> CategoricalReference:
        counts, missing = count_values(values)
        return cls(dict(counts), 0, sum(counts.values()), missing, len(counts))

    @classmethod
    def from_profile(cls, column: dict[str, Any]) -> CategoricalReference:
        cats = {str(k): int(v) for k, v in column.get("categories", {}).items()}
        other = int(column.get("other", 0))
        return cls(cats, other, int(column.get("count", sum(cats.values()) + other)),
                   int(column.get("missing", 0)), int(column.get("unique", len(cats))))


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def count_values(values: Iterable[Any]) -> tuple[Counter[str], int]:
    """Category counts of present values, and how many were missing."""
    counts: Counter[Any] = Counter(values)
    missing = 0
    for key in [k for k in counts if _is_missing(k)]:
        missing += counts.pop(key)
    if any(not isinstance(k, str) for k in counts):
        merged: Counter[str] = Counter()
        for k, c in counts.items():
            merged[str(k)] += c
        return merged, missing
    return counts, missing


@dataclass(frozen=True)
class CategoricalCells:
    """Both samples laid onto the same cells."""

    labels: list[str]
    ref: np.ndarray
    cur: np.ndarray
    unseen: dict[str, int]  # current categories the reference never had (complete reference)
    n: int  # with weights: sums of weights, as are missing and unseen
    missing: int


def weighted_counts(values: Iterable[Any], weights: Iterable[float]) -> tuple[Counter[str], float]:
    """As ``count_values``, each value counting as its weight."""
    sums: dict[Any, float] = {}
    for v, w in zip(values, weights, strict=True):
        sums[v] = sums.get(v, 0.0) + float(w)
    missing = 0.0
    counts: Counter[str] = Counter()
    for k, total in sums.items():
        if _is_missing(k):
            missing += total
        else:
            counts[str(k)] += total  # type: ignore[assignment]
    return counts, missing


def cells(ref: CategoricalReference, values: Iterable[Any],
          weights: Iterable[float] | None = None) -> tuple[CategoricalCells, Counter[str]]:
    """Count the current column (each value as its weight, if given) and lay both samples
    onto the reference's cells."""
    counts: Counter[str]
    missing: Any
    if weights is None:
        counts, missing = count_values(values)
    else:
        counts, missing = weighted_counts(values, weights)
    labels = list(ref.counts)
    r = [float(ref.counts[k]) for k in labels]
    c = [float(counts.get(k, 0)) for k in labels]
    rest = {k: v for k, v in counts.items() if k not in ref.counts}
    unseen: dict[str, int] = {}
    if ref.complete:
        unseen = dict(sorted(rest.items(), key=lambda kv: (-kv[1], kv[0])))
        for k, v in unseen.items():
            labels.append(k)
            r.append(0.0)
            c.append(float(v))
    else:
        labels.append(OTHER)
        r.append(float(ref.other))
        c.append(float(sum(rest.values())))
    total = sum(counts.values())
    return (CategoricalCells(labels, np.array(r), np.array(c), unseen,
                             int(total) if weights is None else total, missing), counts)
