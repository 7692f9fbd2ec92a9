"""The service time of one run against its size: t(b) = a + c·b, fitted by weighted least
squares on (size, time, weight) points.

For a tabular model, b is the rows of one onnxruntime run and t its time; for a
language model, b is the sequences in one generation step and t the step's time (the
inter-token latency at that many streams). ``a`` is what every run costs (launching
kernels, crossing into onnxruntime), ``c`` what each row or sequence adds. Neither may
be negative: a fit that gives a negative ``a`` is redone through the origin, one that
gives a negative ``c`` is a constant.
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
    points: int  # distinct sizes fitted on
    r2: float  # share of the variance of the times the line explains
    source: str  # where the points came from: "request log", "profile", or both

    def __call__(self, b: int | float) -> float:
        return self.a + self.c * b

    def throughput(self, b: int) -> float:
        """Rows (or sequences) per second when every run has ``b``."""
        return b / self(b)

    def as_dict(self) -> dict[str, Any]:
        return {"a_us": round(self.a * 1e6, 2), "c_us": round(self.c * 1e6, 3),
                "points": self.points, "r2": round(self.r2, 4), "source": self.source}


def fit(points: Sequence[tuple[float, float, float]], source: str) -> ServiceTime | None:
    """Fit on ``(b, seconds, weight)``; None with fewer than two distinct sizes."""
    pts = [(float(b), float(t), float(w)) for b, t, w in points if w > 0 and t > 0]
    sizes = {b for b, _, _ in pts}
    if len(sizes) < 2:
        return None
    b = np.array([p[0] for p in pts])
    t = np.array([p[1] for p in pts])
    w = np.sqrt(np.array([p[2] for p in pts]))
    design = np.stack([np.ones_like(b), b], axis=1)
    (a, c), *_ = np.linalg.lstsq(design * w[:, None], t * w, rcond=None)
    if a < 0:
        a, c = 0.0, float(np.sum(w * w * b * t) / np.sum(w * w * b * b))
    if c < 0:
        a, c = float(np.average(t, weights=w * w)), 0.0
    predicted = a + c * b
    mean = np.average(t, weights=w * w)
    total = float(np.sum(w * w * (t - mean) ** 2))
    r2 = 1.0 - float(np.sum(w * w * (t - predicted) ** 2)) / total if total > 0 else 1.0
    return ServiceTime(float(a), float(c), len(sizes), r2, source)
