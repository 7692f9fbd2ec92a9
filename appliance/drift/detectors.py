"""Streaming concept-drift detectors over a model's error stream.

Feed one value per labelled prediction (1 for a mistake and 0 for a hit, or
an absolute error) and read ``drift_detected`` after each update. Both follow
the standard definitions and defaults of river:

* ADWIN (Bifet and Gavaldà, 2007): a window of exponential-histogram buckets
  (``max_buckets`` per size); every ``clock`` values, each cut of the window
  into an older and a newer part is tested with a Hoeffding-style bound at
  confidence ``delta``, and the older buckets are dropped while a cut differs.
* Page-Hinkley (Page, 1954): cumulative deviations from the running mean,
  minus ``delta`` and faded by ``alpha``; drift when a cumulative sum rises
  ``threshold`` above its minimum (or falls below its maximum), after
  ``min_instances`` values.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass
class _Row:
    """Buckets of one size (2**row values each), oldest first."""

    totals: list[float] = field(default_factory=list)
    variances: list[float] = field(default_factory=list)


class ADWIN:
    def __init__(self, delta: float = 0.002, clock: int = 32, max_buckets: int = 5,
                 min_window_length: int = 5, grace_period: int = 10) -> None:
        if not 0 < delta < 1:
            raise ValueError("delta must be in (0, 1)")
        self.delta = delta
        self.clock = clock
        self.max_buckets = max_buckets
        self.min_window_length = min_window_length
        self.grace_period = grace_period
        self.rows: list[_Row] = [_Row()]
        self.total = 0.0
        self.variance = 0.0
        self.width = 0
        self.tick = 0
        self.n_detections = 0
        self.drift_detected = False

    @property
    def estimation(self) -> float:
        """Mean of the values in the current window."""
        return self.total / self.width if self.width else 0.0

    def update(self, value: float) -> bool:
        self._insert(float(value))
        self.drift_detected = self._detect()
        return self.drift_detected

    def _insert(self, value: float) -> None:
        row = self.rows[0]
        row.totals.append(value)
        row.variances.append(0.0)
        self.width += 1
        if self.width > 1:
            prev_mean = self.total / (self.width - 1)
            self.variance += (self.width - 1) * (value - prev_mean) ** 2 / self.width
        self.total += value
        self._compress()

    def _compress(self) -> None:
        i = 0
        while i < len(self.rows) and len(self.rows[i].totals) > self.max_buckets:
            if i + 1 == len(self.rows):
                self.rows.append(_Row())
            row, nxt = self.rows[i], self.rows[i + 1]
            size = 2.0**i
            t1, t2 = row.totals[0], row.totals[1]
            v1, v2 = row.variances[0], row.variances[1]
            mu1, mu2 = t1 / size, t2 / size
            nxt.totals.append(t1 + t2)
            nxt.variances.append(v1 + v2 + size * size * (mu1 - mu2) ** 2 / (2 * size))
            del row.totals[:2], row.variances[:2]
            i += 1

    def _drop_oldest(self) -> float:
        row_idx = len(self.rows) - 1
        while row_idx > 0 and not self.rows[row_idx].totals:
            row_idx -= 1
        row = self.rows[row_idx]
        n = 2.0**row_idx
        u, v = row.totals.pop(0), row.variances.pop(0)
        self.width -= int(n)
        self.total -= u
        mu = u / n
        mu_window = self.total / self.width if self.width else 0.0
        self.variance -= v + n * self.width * (mu - mu_window) ** 2 / (n + self.width)
        self.variance = max(self.variance, 0.0)
        while len(self.rows) > 1 and not self.rows[-1].totals:
            self.rows.pop()
        return n

    def _detect(self) -> bool:
        self.tick += 1
        if self.tick % self.clock != 0 or self.width <= self.grace_period:
            return False
        detected = False
        reduce = True
        while reduce:
            reduce = False
            n0, n1 = 0.0, float(self.width)
            u0, u1 = 0.0, self.total
            # Walk the buckets oldest first: window 0 the older part, window 1 the newer.
            buckets = [(2.0**i, t) for i in range(len(self.rows) - 1, -1, -1)
                       for t in self.rows[i].totals]
            for size, t in buckets[:-1]:
                n0 += size
                n1 -= size
                u0 += t
                u1 -= t
                if n0 >= self.min_window_length and n1 >= self.min_window_length:
                    if self._cut(n0, n1, u0 / n0 - u1 / n1):
                        detected = reduce = True
                        if self.width > 0:
                            self._drop_oldest()
                        break
        if detected:
            self.n_detections += 1
        return detected

    def _cut(self, n0: float, n1: float, delta_mean: float) -> bool:
        delta_prime = math.log(2 * math.log(self.width) / self.delta)
        m_recip = 1.0 / (n0 - self.min_window_length + 1) + 1.0 / (n1 - self.min_window_length + 1)
        var = self.variance / self.width
        epsilon = math.sqrt(2 * m_recip * var * delta_prime) + 2.0 / 3.0 * delta_prime * m_recip
        return abs(delta_mean) > epsilon


class PageHinkley:
    def __init__(self, min_instances: int = 30, delta: float = 0.005, threshold: float = 50.0,
                 alpha: float = 1 - 0.0001, mode: str = "both") -> None:
        if mode not in ("up", "down", "both"):
            raise ValueError("mode must be up, down or both")
        self.min_instances = min_instances
        self.delta = delta
        self.threshold = threshold
        self.alpha = alpha
        self.mode = mode
        self.n_detections = 0
        self.drift_detected = False
        self._reset()

    def _reset(self) -> None:
        self.n = 0
        self.mean = 0.0
        self.sum_up = 0.0
        self.sum_down = 0.0
        self.min_up = math.inf
        self.max_down = -math.inf

    def update(self, value: float) -> bool:
        if self.drift_detected:
            self._reset()
        self.n += 1
        self.mean += (value - self.mean) / self.n
        dev = value - self.mean
        self.sum_up = self.alpha * self.sum_up + dev - self.delta
        self.sum_down = self.alpha * self.sum_down + dev + self.delta
        self.min_up = min(self.min_up, self.sum_up)
        self.max_down = max(self.max_down, self.sum_down)
        self.drift_detected = False
        if self.n >= self.min_instances:
            up = self.sum_up - self.min_up > self.threshold
            down = self.max_down - self.sum_down > self.threshold
            self.drift_detected = (
                (up and self.mode in ("up", "both")) or (down and self.mode in ("down", "both"))
            )
        if self.drift_detected:
            self.n_detections += 1
        return self.drift_detected


def first_detection(detector: ADWIN | PageHinkley, stream: Iterable[float]) -> int | None:
    """Index of the first value after which ``detector`` signals drift, or None."""
    for i, value in enumerate(stream):
        if detector.update(float(value)):
            return i
    return None
