"""The time one run takes: t = a + c·b + d·k, fitted by non-negative weighted least
squares on (b, k, seconds, weight) points.

For a tabular model a run holds b rows from k requests: ``a`` is what every run costs
(crossing into onnxruntime, launching kernels), ``c`` what each row adds, ``d`` what each
request adds (decoding its body, splitting its answer back out). Where every request
carries the same rows, b and k move together and ``d`` is folded into ``c`` (``d`` is 0).
For a language model b = k is the sequences of one generation step. No term is ever
negative.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ServiceTime:
    a: float  # seconds a run costs whatever its size
    c: float  # seconds each row (or sequence) adds
    d: float  # seconds each request adds
    points: int  # distinct sizes fitted on
    r2: float  # share of the variance of the times the line explains
    source: str  # where the points came from

    def __call__(self, b: float, k: float | None = None) -> float:
        return self.a + self.c * b + self.d * (b if k is None else k)

    def throughput(self, b: int, k: float | None = None) -> float:
        """Rows (or sequences) per second when every run has ``b`` of them."""
        return b / self(b, k)

    def as_dict(self) -> dict[str, Any]:
        return {"a_us": round(self.a * 1e6, 2), "c_us": round(self.c * 1e6, 3),
                "d_us": round(self.d * 1e6, 3), "points": self.points,
                "r2": round(self.r2, 4), "source": self.source}


def fit(points: Sequence[tuple[float, float, float, float]], source: str
        ) -> ServiceTime | None:
    """Fit on ``(b, k, seconds, weight)``; None with fewer than two distinct sizes."""
    from scipy.optimize import nnls

    pts = [tuple(map(float, p)) for p in points if p[3] > 0 and p[2] > 0]
    if len({(b, k) for b, k, _, _ in pts}) < 2:
        return None
    b, k, t, w = (np.array([p[i] for p in pts]) for i in range(4))
    root = np.sqrt(w)
    design = np.stack([np.ones_like(b), b, k], axis=1)
    if np.linalg.matrix_rank(design) < 3:  # b and k move together: no separate d
        design = design[:, :2]
    coef, _ = nnls(design * root[:, None], t * root)
    a, c = float(coef[0]), float(coef[1])
    d = float(coef[2]) if len(coef) > 2 else 0.0
    predicted = design @ coef
    mean = np.average(t, weights=w)
    total = float(np.sum(w * (t - mean) ** 2))
    r2 = 1.0 - float(np.sum(w * (t - predicted) ** 2)) / total if total > 0 else 1.0
    return ServiceTime(a, c, d, len({(x, y) for x, y, _, _ in pts}), r2, source)
