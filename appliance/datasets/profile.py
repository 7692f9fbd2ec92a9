"""The reference profile of a dataset version: what drift is measured against.

Computed once when a dataset version is registered and stored as a canonical
JSON blob (``dataset_versions.profile_digest``; model versions trained on it
point at the same blob). Format ``appliance.profile/1``::

    {
      "format": "appliance.profile/1",
      "row_count": 500,
      "columns": {
        "<numeric, boolean or timestamp column>": {
          "type": "numeric",            # or "boolean" (0/1), "timestamp" (epoch seconds, UTC)
          "count": 498,                 # present values
          "missing": 2, "missing_share": 0.004,
          "unique": 431,                # distinct present values
          "min": ..., "max": ..., "mean": ..., "std": ...,   # std with ddof=0
          "bins": {
            "edges": [e0, e1, ..., ek], # strictly increasing quantile edges, k <= profile_bins
            "counts": [c1, ..., ck]     # values in [e(i-1), e(i)); the last bin includes ek
          }
        },
        "<categorical column>": {
          "type": "categorical",
          "count": 500, "missing": 0, "missing_share": 0.0,
          "unique": 12,
          "categories": {"a": 310, "b": 120, ...},  # the profile_top_k most frequent
          "other": 5                                # present values outside the top k
        }
      }
    }

The edges are the quantiles of the column at ``profile_bins`` + 1 evenly
spaced probabilities, de-duplicated, so a column with few distinct values has
few bins and each distinct value is its own edge. With edges and counts a
reader can rebuild the empirical CDF (KS), bucket new data into the same bins
(PSI, chi-square, Jensen-Shannon) and approximate the Wasserstein distance,
without the reference rows. A column with one distinct value has the edges
``[v, v]`` and one count. A column with no present values has no ``bins``.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from appliance.datasets.table import Table

FORMAT = "appliance.profile/1"


def numeric_profile(values: np.ndarray, bins: int) -> dict[str, Any]:
    present = values[~np.isnan(values)]
    total = len(values)
    out: dict[str, Any] = {
        "count": int(len(present)),
        "missing": int(total - len(present)),
        "missing_share": float((total - len(present)) / total) if total else 0.0,
        "unique": int(len(np.unique(present))),
    }
    if not len(present):
        return out
    out.update(
        min=float(present.min()),
        max=float(present.max()),
        mean=float(present.mean()),
        std=float(present.std()),
    )
    edges = np.unique(np.quantile(present, np.linspace(0.0, 1.0, bins + 1)))
    if len(edges) == 1:
        out["bins"] = {"edges": [float(edges[0])] * 2, "counts": [int(len(present))]}
        return out
    counts, _ = np.histogram(present, bins=edges)
    out["bins"] = {"edges": [float(e) for e in edges], "counts": [int(c) for c in counts]}
    return out


def categorical_profile(values: list[str | None], top_k: int) -> dict[str, Any]:
    present = [v for v in values if v is not None]
    total = len(values)
    counts = Counter(present)
    # Ties broken by the value, so the same data always gives the same profile.
    top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top_k]
    kept = sum(c for _, c in top)
    return {
        "count": len(present),
        "missing": total - len(present),
        "missing_share": (total - len(present)) / total if total else 0.0,
        "unique": len(counts),
        "categories": dict(top),
        "other": len(present) - kept,
    }


def build_profile(table: Table, *, bins: int = 1000, top_k: int = 50) -> dict[str, Any]:
    columns: dict[str, Any] = {}
    for name in table.names:
        kind = table.types[name]
        if kind == "categorical":
            col = categorical_profile(table.columns[name], top_k)
        else:
            col = numeric_profile(table.columns[name], bins)
        columns[name] = {"type": kind, **col}
    return {"format": FORMAT, "row_count": table.row_count, "columns": columns}
