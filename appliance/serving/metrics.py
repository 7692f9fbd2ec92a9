"""Prometheus metrics of the serving daemon, with Triton's names where one exists.

Counters are plain integers updated on the event loop's thread (the batcher
hands results back there), so the request path takes no lock; ``render``
writes the Prometheus text format. Durations follow Triton: cumulative
microseconds per model and version, plus a latency histogram in seconds.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
           0.25, 0.5, 1.0, 2.5, 5.0)

Key = tuple[str, str]  # (model, version)


class Histogram:
    __slots__ = ("counts", "total", "count")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.total = 0.0
        self.count = 0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.total += seconds
        self.count += 1


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    inner = ",".join(f'{k}="{_esc(v)}"' for k, v in pairs)
    return "{" + inner + "}" if inner else ""


class Metrics:
    def __init__(self) -> None:
        self.success: dict[Key, int] = defaultdict(int)
        self.failure: dict[tuple[str, str, str], int] = defaultdict(int)
        self.inference_count: dict[Key, int] = defaultdict(int)
        self.exec_count: dict[Key, int] = defaultdict(int)
        self.request_us: dict[Key, int] = defaultdict(int)
        self.queue_us: dict[Key, int] = defaultdict(int)
        self.compute_us: dict[Key, int] = defaultdict(int)
        self.pending: dict[Key, int] = defaultdict(int)
        self.latency: dict[Key, Histogram] = defaultdict(Histogram)
        self.shadow_count: dict[Key, int] = defaultdict(int)
        # For Triton's statistics extension (GET /v2/models/.../stats).
        self.fail_count: dict[Key, int] = defaultdict(int)
        self.fail_us: dict[Key, int] = defaultdict(int)
        self.queue_count: dict[Key, int] = defaultdict(int)
        self.request_compute_count: dict[Key, int] = defaultdict(int)
        self.request_compute_us: dict[Key, int] = defaultdict(int)
        self.batch_stats: dict[tuple[Key, int], list[int]] = defaultdict(lambda: [0, 0])
        self.last_inference_ms: dict[Key, int] = {}
        # Written by the model-loading thread, hence the lock.
        self._lock = threading.Lock()
        self.loaded: dict[Key, str] = {}  # -> execution provider
        self.load_failures: dict[Key, int] = defaultdict(int)
        self.swaps: dict[str, int] = defaultdict(int)
        self.log_dropped = 0
        self.log_written = 0
        self.log_unstorable = 0  # of log_dropped: rows the database could not take

    def request_done(self, key: Key, seconds: float) -> None:
        self.success[key] += 1
        self.request_us[key] += int(seconds * 1e6)
        self.latency[key].observe(seconds)
        self.last_inference_ms[key] = int(time.time() * 1000)

    def request_failed(self, key: Key, reason: str, seconds: float) -> None:
        self.failure[(key[0], key[1], reason)] += 1
        self.fail_count[key] += 1
        self.fail_us[key] += int(seconds * 1e6)
        self.latency[key].observe(seconds)

    def batch_done(self, key: Key, rows: int, queue_us: int, compute_us: int,
                   requests: int = 1, batch_rows: int | None = None) -> None:
        """One onnxruntime run of ``requests`` requests (``batch_rows`` rows, ``rows`` of
        them answered), which waited ``queue_us`` in all and ran for ``compute_us``."""
        self.exec_count[key] += 1
        self.inference_count[key] += rows
        self.queue_us[key] += queue_us
        self.compute_us[key] += compute_us
        self.queue_count[key] += requests
        # Triton counts a run once for each request in it, with the run's whole duration.
        self.request_compute_count[key] += requests
        self.request_compute_us[key] += compute_us * requests
        stat = self.batch_stats[(key, batch_rows if batch_rows is not None else rows)]
        stat[0] += 1
        stat[1] += compute_us

    def stat_keys(self) -> set[Key]:
        """Every model version with statistics, or loaded now."""
        with self._lock:
            loaded = set(self.loaded)
        return (loaded | set(self.success) | set(self.fail_count) | set(self.exec_count))

    def triton_stats(self, key: Key) -> dict[str, Any]:
        """One version's figures in the shape of Triton's statistics extension."""

        def duration(count: int, us: int) -> dict[str, int]:
            return {"count": count, "ns": us * 1000}

        success = self.success.get(key, 0)
        zero = duration(0, 0)
        batches = sorted((size, stat) for (k, size), stat in list(self.batch_stats.items())
                         if k == key)
        return {
            "name": key[0],
            "version": key[1],
            "last_inference": self.last_inference_ms.get(key, 0),
            "inference_count": self.inference_count.get(key, 0),
            "execution_count": self.exec_count.get(key, 0),
            "inference_stats": {
                "success": duration(success, self.request_us.get(key, 0)),
                "fail": duration(self.fail_count.get(key, 0), self.fail_us.get(key, 0)),
                "queue": duration(self.queue_count.get(key, 0), self.queue_us.get(key, 0)),
                "compute_input": zero,
                "compute_infer": duration(self.request_compute_count.get(key, 0),
                                          self.request_compute_us.get(key, 0)),
                "compute_output": zero,
                "cache_hit": zero,
                "cache_miss": zero,
            },
            "batch_stats": [{"batch_size": size,
                             "compute_input": duration(n, 0),
                             "compute_infer": duration(n, us),
                             "compute_output": duration(n, 0)} for size, (n, us) in batches],
            "memory_usage": [],
        }

    def model_loaded(self, key: Key, provider: str) -> None:
        with self._lock:
            self.loaded[key] = provider

    def model_unloaded(self, key: Key) -> None:
        with self._lock:
            self.loaded.pop(key, None)

    def load_failed(self, key: Key) -> None:
        with self._lock:
            self.load_failures[key] += 1

    def swapped(self, model: str) -> None:
        with self._lock:
            self.swaps[model] += 1

    def render(self) -> str:
        out: list[str] = []

        def family(name: str, kind: str, help_text: str, rows: list[tuple[str, float]]) -> None:
            out.append(f"# HELP {name} {help_text}")
            out.append(f"# TYPE {name} {kind}")
            for labels, value in rows:
                out.append(f"{name}{labels} {value:g}" if isinstance(value, float)
                           else f"{name}{labels} {value}")

        def per_key(d: dict[Key, int]) -> list[tuple[str, float]]:
            return [(_labels((("model", m), ("version", v))), n)
                    for (m, v), n in sorted(list(d.items()))]

        family("nv_inference_request_success", "counter",
               "Successful inference requests, per model and version.", per_key(self.success))
        family("nv_inference_request_failure", "counter",
               "Failed inference requests, per model, version and reason.",
               [(_labels((("model", m), ("version", v), ("reason", r))), n)
                for (m, v, r), n in sorted(list(self.failure.items()))])
        family("nv_inference_count", "counter",
               "Rows inferred (a batch of n counts n).", per_key(self.inference_count))
        family("nv_inference_exec_count", "counter",
               "onnxruntime runs; count / exec_count is the average batch.",
               per_key(self.exec_count))
        family("nv_inference_pending_request_count", "gauge",
               "Requests waiting for or in an onnxruntime run.", per_key(self.pending))
        family("nv_inference_request_duration_us", "counter",
               "Cumulative time of successful requests inside the server, in microseconds.",
               per_key(self.request_us))
        family("nv_inference_queue_duration_us", "counter",
               "Cumulative time requests waited for the batcher, in microseconds.",
               per_key(self.queue_us))
        family("nv_inference_compute_infer_duration_us", "counter",
               "Cumulative time of onnxruntime runs, in microseconds.", per_key(self.compute_us))
        family("appliance_shadow_inference_count", "counter",
               "Requests copied to a shadow version.", per_key(self.shadow_count))

        name = "appliance_inference_request_duration_seconds"
        out.append(f"# HELP {name} Request latency inside the server, per model and version.")
        out.append(f"# TYPE {name} histogram")
        for (m, v), hist in sorted(list(self.latency.items())):
            running = 0
            for bound, n in zip((*BUCKETS, float("inf")), hist.counts, strict=True):
                running += n
                le = "+Inf" if bound == float("inf") else f"{bound:g}"
                out.append(f"{name}_bucket{_labels((('model', m), ('version', v), ('le', le)))} {running}")
            lab = _labels((("model", m), ("version", v)))
            out.append(f"{name}_sum{lab} {hist.total:.6f}")
            out.append(f"{name}_count{lab} {hist.count}")

        with self._lock:
            loaded = sorted(self.loaded.items())
            failures = sorted(self.load_failures.items())
            swaps = sorted(self.swaps.items())
        family("appliance_model_loaded", "gauge",
               "1 for each loaded model version, labelled with its execution provider.",
               [(_labels((("model", m), ("version", v), ("provider", p))), 1)
                for (m, v), p in loaded])
        family("appliance_model_load_failures_total", "counter",
               "Versions that failed to load or warm up and were not served.",
               [(_labels((("model", m), ("version", v))), n) for (m, v), n in failures])
        family("appliance_model_swaps_total", "counter",
               "Times a model's serving versions changed without a restart.",
               [(_labels((("model", m),)), n) for m, n in swaps])
        family("appliance_request_log_written_total", "counter",
               "Request-log rows written to monitoring.db.", [("", self.log_written)])
        family("appliance_request_log_dropped_total", "counter",
               "Request-log rows dropped because the writer's queue was full or failed.",
               [("", self.log_dropped)])
        family("appliance_request_log_unstorable_total", "counter",
               "Request-log rows dropped because the database could not store them "
               "(also counted in appliance_request_log_dropped_total).",
               [("", self.log_unstorable)])
        return "\n".join(out) + "\n"
