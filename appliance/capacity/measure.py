"""Measurement windows until stable, percentiles, and what a process holds.

A point of a profile is measured the way perf_analyzer measures: load is kept up while
windows of ``window_s`` seconds are taken one after another, and the point is stable
when the throughput and the mean latency of the last ``STABLE_WINDOWS`` windows each
vary by no more than ``stability`` (a share: 0.10 is 10%) from their mean. The figures
of the point are those of the stable windows; a point that is not stable after
``max_windows`` windows is kept with ``stable: false``, and its figures are those of
the last ``STABLE_WINDOWS`` windows.

Where a GPU runs the model, memory is what NVML says the serving process holds on it and
activity is the GPU's utilisation (or SM activity where NVML's GPM metrics give it);
on a CPU, resident memory and the share of a core the process used stand in.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

STABLE_WINDOWS = 3


def percentiles(values: Sequence[float], qs: Sequence[int] = (50, 95, 99)) -> dict[str, float]:
    """``{"p50": ..., "p95": ..., "p99": ...}``; zeros for no values."""
    if not len(values):
        return {f"p{q}": 0.0 for q in qs}
    arr = np.asarray(values, dtype=np.float64)
    return {f"p{q}": float(v) for q, v in zip(qs, np.percentile(arr, qs), strict=True)}


@dataclass
class Window:
    seconds: float
    count: int  # requests answered in the window
    units: float  # rows (tabular) or tokens (language model) answered
    mean_latency: float

    @property
    def throughput(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else 0.0


def spread(values: Sequence[float]) -> float:
    """The largest relative distance of a value from the mean (0 for constant values)."""
    mean = sum(values) / len(values)
    if mean == 0:
        return 0.0 if all(v == 0 for v in values) else float("inf")
    return max(abs(v - mean) for v in values) / abs(mean)


def is_stable(windows: Sequence[Window], stability: float) -> bool:
    """The last ``STABLE_WINDOWS`` windows agree within ``stability``, and each answered
    something."""
    last = windows[-STABLE_WINDOWS:]
    if len(last) < STABLE_WINDOWS or any(w.count == 0 for w in last):
        return False
    return (spread([w.throughput for w in last]) <= stability
            and spread([w.mean_latency for w in last]) <= stability)


# ---- what a process holds ------------------------------------------------------


def resident_bytes(pid: int | None = None) -> int:
    """Resident memory of a process (this one by default), from /proc; 0 where unknown."""
    try:
        with open(f"/proc/{pid or os.getpid()}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def cpu_seconds(pid: int | None = None) -> float:
    """User and system CPU time a process has used so far; 0 where unknown."""
    if pid is None or pid == os.getpid():
        t = os.times()
        return t.user + t.system
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


class Probe:
    """Samples memory and activity of the process that runs a model.

    ``device`` is ``"cuda"`` or ``"cpu"``. On ``cuda`` the readings come from ``telemetry``
    (an ``appliance.gpu.telemetry`` source): the process's GPU memory and the GPUs'
    activity; on ``cpu``, resident memory and CPU time.
    """

    def __init__(self, pid: int, device: str, telemetry: Any = None) -> None:
        self.pid = pid
        self.device = device
        self.telemetry = telemetry
        self._cpu0 = cpu_seconds(pid)
        self._t0 = time.perf_counter()
        self.memory_peak = 0
        self.activity: list[float] = []

    def start(self) -> None:
        self._cpu0 = cpu_seconds(self.pid)
        self._t0 = time.perf_counter()
        self.memory_peak = 0
        self.activity = []

    def sample(self) -> None:
        if self.device == "cuda" and self.telemetry is not None:
            reading = self.telemetry.read()
            held = sum(b for g in reading.gpus for p, b in g.processes if p == self.pid)
            self.memory_peak = max(self.memory_peak, held)
            busy = [g.sm_active * 100 if g.sm_active is not None else g.utilization
                    for g in reading.gpus if any(p == self.pid for p, _ in g.processes)]
            if busy:
                self.activity.append(max(busy))
            return
        self.memory_peak = max(self.memory_peak, resident_bytes(self.pid))
        now = time.perf_counter()
        cpu = cpu_seconds(self.pid)
        if now > self._t0:
            self.activity.append(100.0 * (cpu - self._cpu0) / (now - self._t0))
        self._cpu0, self._t0 = cpu, now

    def figures(self) -> dict[str, Any]:
        """``memory_bytes`` (peak), ``memory_kind`` and ``activity_percent`` (mean): on a
        CPU, 100 means one core busy all the time."""
        kind = "gpu" if self.device == "cuda" else "resident"
        mean = sum(self.activity) / len(self.activity) if self.activity else None
        return {"memory_bytes": self.memory_peak, "memory_kind": kind,
                "activity_percent": None if mean is None else round(mean, 1),
                "activity_kind": "gpu" if self.device == "cuda" else "cpu"}
