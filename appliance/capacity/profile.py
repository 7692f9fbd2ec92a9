"""The capacity profile of one model version: a sweep, measured as serving serves.

The version is loaded by the serving engine itself (``appliance.serving.engine``), with
the site's serving settings: the same onnxruntime session options, batcher and hot path
for a tabular model, the same child process and onnxruntime-genai runtime for a language
model. Load comes from clients inside the process (no HTTP: the figures are those of the
engine, as perf_analyzer's C API mode gives Triton's), each keeping one request in
flight, so ``concurrency`` is the number of requests outstanding.

- A tabular model is swept over ``batch_sizes`` (rows a request carries) and
  ``concurrency``. Each point gives requests and rows per second, latency split into
  queue time (waiting in the batcher) and compute time (the rest), the rows of the
  onnxruntime runs the batcher made and how long each run took.
- A language model is swept over concurrent ``streams``, ``prompt_tokens`` and
  ``answer_tokens`` (the end of sequence is masked until the answer has that many). Each
  point gives requests and tokens per second, time to first token, inter-token latency,
  queue time and end-to-end latency.

Each point is measured until stable (``appliance.capacity.measure``) and carries the
memory and activity of the process that ran the model.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from appliance.capacity.measure import STABLE_WINDOWS, Probe, Window, is_stable, percentiles
from appliance.config import Config
from appliance.errors import ApplianceError, BadInput, OperationFailed
from appliance.serving.engine import Engine, EngineSettings, LoadedModel
from appliance.serving.llm import Call, LlmService, LlmSettings
from appliance.serving.requestlog import Entry, LlmEntry
from appliance.serving.source import Resolved, Route
from appliance.storage.home import Home

Progress = Callable[[float, str], None]

DEFAULT_BATCH_SIZES = (1, 4, 16, 64)
DEFAULT_CONCURRENCY = (1, 2, 4, 8)
DEFAULT_STREAMS = (1, 2, 4, 8)
DEFAULT_PROMPT_TOKENS = (16,)
DEFAULT_ANSWER_TOKENS = (32,)
MAX_POINTS = 256


@dataclass(frozen=True)
class Sweep:
    """What to measure, and how long; checked by ``check``."""

    batch_sizes: tuple[int, ...] = DEFAULT_BATCH_SIZES
    concurrency: tuple[int, ...] = DEFAULT_CONCURRENCY
    streams: tuple[int, ...] = DEFAULT_STREAMS
    prompt_tokens: tuple[int, ...] = DEFAULT_PROMPT_TOKENS
    answer_tokens: tuple[int, ...] = DEFAULT_ANSWER_TOKENS
    window_s: float = 1.0
    stability: float = 0.10
    max_windows: int = 10

    def as_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.__dict__.items()}

    @classmethod
    def from_params(cls, params: dict[str, Any], config: Config | None = None) -> Sweep:
        """The sweep a job's parameters ask for; ``BadInput`` naming the bad field."""
        base = cls() if config is None else cls(
            window_s=config["capacity.window_s"], stability=config["capacity.stability"],
            max_windows=config["capacity.max_windows"])
        known = set(cls.__dataclass_fields__)
        values: dict[str, Any] = {}
        for key, value in params.items():
            if key in ("model", "version"):
                continue
            if key not in known:
                raise BadInput(f"capacity-profile: unknown parameter '{key}' (known: model, "
                               f"version, {', '.join(sorted(known))})")
            values[key] = _sizes(key, value) if isinstance(getattr(base, key), tuple) \
                else _number(key, value, float if key != "max_windows" else int)
        sweep = replace(base, **values)
        sweep.check()
        return sweep

    def check(self) -> None:
        if not 0.05 <= self.window_s <= 60:
            raise BadInput(f"window_s: must be from 0.05 to 60 seconds, not {self.window_s:g}")
        if not 0.0 < self.stability < 1.0:
            raise BadInput(f"stability: must be a share between 0 and 1, not {self.stability:g}")
        if not STABLE_WINDOWS <= self.max_windows <= 1000:
            raise BadInput(f"max_windows: must be from {STABLE_WINDOWS} to 1000, "
                           f"not {self.max_windows}")
        tabular = len(self.batch_sizes) * len(self.concurrency)
        llm = len(self.streams) * len(self.prompt_tokens) * len(self.answer_tokens)
        if max(tabular, llm) > MAX_POINTS:
            raise BadInput(f"the sweep has {max(tabular, llm)} points; at most {MAX_POINTS}")


def _sizes(key: str, value: Any) -> tuple[int, ...]:
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not items:
        raise BadInput(f"{key}: must be a list of whole numbers like 1,2,4")
    out: list[int] = []
    for item in items:
        try:
            n = int(str(item).strip())
        except ValueError:
            raise BadInput(f"{key}: {str(item).strip()!r} is not a whole number") from None
        if isinstance(item, bool) or not 1 <= n <= 65536 or str(item).strip() != str(n):
            raise BadInput(f"{key}: {item!r} must be a whole number from 1 to 65536")
        out.append(n)
    if len(set(out)) != len(out):
        raise BadInput(f"{key}: {','.join(map(str, out))} names a value twice")
    return tuple(sorted(out))


def _number(key: str, value: Any, kind: type) -> Any:
    if isinstance(value, bool):
        raise BadInput(f"{key}: must be a number, not {value!r}")
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise BadInput(f"{key}: must be a number, not {value!r}") from None


# ---- the engine, serving one version -----------------------------------------------


class _OneVersion:
    """A model source that serves one version, read and verified from the registry the
    way the serving daemon's source reads it."""

    def __init__(self, home: Home, name: str, version: int) -> None:
        from appliance.serving.registry_source import RegistrySource

        self._registry = RegistrySource(home)
        self.name = name
        self.version = version
        self.model: Path | bytes | None = None  # what the engine loaded


    def fingerprint(self) -> Hashable:
        return (self.name, self.version)

    def list_served(self) -> dict[str, Route]:
        return {self.name: Route(self.name, self.version)}

    def resolve(self, name: str, version: int | None) -> Resolved:
        resolved = self._registry.resolve(name, self.version)
        self.model = resolved.model
        return resolved

    def close(self) -> None:
        self._registry.close()


class _Collector:
    """Stands in for the request log: keeps what the engine would have written."""

    def __init__(self) -> None:
        self.entries: list[Entry | LlmEntry] = []

    def start(self) -> None:
        pass

    def record(self, entry: Entry | LlmEntry) -> None:
        self.entries.append(entry)

    def close(self, timeout: float = 5.0) -> None:
        pass

    def take(self) -> list[Any]:
        out, self.entries = self.entries, []
        return out


class _Engine(Engine):
    """The serving engine, also keeping each onnxruntime run: (rows, microseconds)."""

    runs: list[tuple[int, int]]

    def _batch_done(self, model: LoadedModel, batch: list[Any], compute_us: int) -> None:
        super()._batch_done(model, batch, compute_us)
        self.runs.append((sum(j.rows for j in batch), compute_us))


# ---- requests ---------------------------------------------------------------------


def request_body(signature: Any, rows: int, seed: int = 0) -> bytes:
    """A V2 request of ``rows`` rows for the signature: normal numbers for floats, small
    whole numbers for integers, short words for text."""
    rng = np.random.default_rng(seed)
    inputs = []
    for spec in signature.inputs:
        shape = [rows] + [1 if d == -1 else d for d in spec.shape[1:]]
        count = int(np.prod(shape))
        if spec.datatype == "BYTES":
            data: list[Any] = [f"w{int(i)}" for i in rng.integers(0, 50, count)]
        elif spec.datatype == "BOOL":
            data = [bool(v) for v in rng.integers(0, 2, count)]
        elif spec.datatype.startswith(("INT", "UINT")):
            data = [int(v) for v in rng.integers(0, 3, count)]
        else:
            data = [round(float(v), 4) for v in rng.normal(size=count)]
        inputs.append({"name": spec.name, "shape": shape, "datatype": spec.datatype,
                       "data": data})
    return json.dumps({"inputs": inputs}).encode()


# ---- the sweep -------------------------------------------------------------------


@dataclass
class _Load:
    """Clients keeping ``concurrency`` requests in flight, until stopped."""

    stop: bool = False
    errors: list[str] = field(default_factory=list)


def _points(sweep: Sweep, llm: bool) -> Iterator[tuple[int, int, int]]:
    if llm:
        for p in sweep.prompt_tokens:
            for a in sweep.answer_tokens:
                for s in sweep.streams:
                    yield s, p, a
    else:
        for b in sweep.batch_sizes:
            for c in sweep.concurrency:
                yield b, c, 0


async def _measure(sweep: Sweep, probe: Probe, take: Callable[[], list[Any]],
                   count: Callable[[list[Any]], tuple[int, float, float]],
                   load: _Load) -> tuple[list[Any], list[Window], bool]:
    """Windows until stable: the entries of the last ``STABLE_WINDOWS`` windows, every
    window, and whether the last ones agreed."""
    await asyncio.sleep(sweep.window_s / 2)  # ramp up: queues fill, threads wake
    take()
    probe.start()
    windows: list[Window] = []
    kept: list[list[Any]] = []
    stable = False
    while len(windows) < sweep.max_windows:
        started = time.perf_counter()
        await asyncio.sleep(sweep.window_s)
        entries = take()
        probe.sample()
        n, units, mean_latency = count(entries)
        windows.append(Window(time.perf_counter() - started, n, units, mean_latency))
        kept.append(entries)
        if load.errors:
            break
        if is_stable(windows, sweep.stability):
            stable = True
            break
    last = [e for es in kept[-STABLE_WINDOWS:] for e in es]
    return last, windows, stable


def _tabular_count(entries: list[Any]) -> tuple[int, float, float]:
    ok = [e for e in entries if e.status == 200]
    mean = sum(e.latency_us for e in ok) / len(ok) if ok else 0.0
    return len(ok), float(sum(e.rows for e in ok)), mean


def _llm_count(entries: list[Any]) -> tuple[int, float, float]:
    ok = [e for e in entries if e.status == 200]
    mean = sum(e.e2e_ms for e in ok) / len(ok) if ok else 0.0
    return len(ok), float(sum(e.completion_tokens for e in ok)), mean


async def _tabular_point(engine: _Engine, model: LoadedModel, sweep: Sweep, probe: Probe,
                         batch: int, concurrency: int) -> dict[str, Any]:
    body = request_body(model.signature, batch)
    load = _Load()
    log: Any = engine.request_log

    async def client() -> None:
        while not load.stop:
            try:
                await engine.infer(model.name, None, body, None, time.perf_counter(),
                                   alone=concurrency == 1)
            except ApplianceError as exc:  # reported with the point
                load.errors.append(str(exc))
                load.stop = True

    engine.runs = []
    tasks = [asyncio.create_task(client()) for _ in range(concurrency)]
    try:
        entries, windows, stable = await _measure(sweep, probe, log.take, _tabular_count, load)
        runs = list(engine.runs)
    finally:
        load.stop = True
        await asyncio.gather(*tasks, return_exceptions=True)
        log.take()
    if load.errors:
        raise OperationFailed(f"batch size {batch}, concurrency {concurrency}: {load.errors[0]}")
    ok = [e for e in entries if e.status == 200]
    seconds = sum(w.seconds for w in windows[-STABLE_WINDOWS:])
    run_us = [us for _, us in runs]
    point = {
        "batch_size": batch, "concurrency": concurrency, "stable": stable,
        "windows": len(windows), "seconds": round(seconds, 3),
        "requests_per_s": round(len(ok) / seconds, 2),
        "rows_per_s": round(sum(e.rows for e in ok) / seconds, 2),
        "latency_us": _rounded(percentiles([e.latency_us for e in ok])),
        "queue_us": _rounded(percentiles([e.queue_us for e in ok])),
        "compute_us": _rounded(percentiles([e.latency_us - e.queue_us for e in ok])),
        "run_rows_mean": round(sum(r for r, _ in runs) / len(runs), 2) if runs else 0,
        "run_us": _rounded(percentiles(run_us)),
    }
    # What one run occupies the model for, all its work counted (each request's decoding
    # and answer as well as the run): the measured time divided among the runs. Clients
    # keep the model busy, so this is the service time of a run of this size.
    rows_per_run = sum(r for r, _ in runs) / len(runs) if runs else 0.0
    if rows_per_run and point["rows_per_s"]:
        point["service"] = {"rows": round(rows_per_run, 3),
                            "requests": round(rows_per_run / batch, 3),
                            "period_us": round(1e6 * rows_per_run / point["rows_per_s"], 2)}

    point.update(probe.figures())
    return point


def _rounded(values: dict[str, float], digits: int = 1) -> dict[str, float]:
    return {k: round(v, digits) for k, v in values.items()}


async def _llm_point(engine: _Engine, model: LoadedModel, sweep: Sweep, probe: Probe,
                     streams: int, prompt: int, answer: int) -> dict[str, Any] | None:
    llm = model.llm
    assert llm is not None
    if prompt + answer > llm.context_length:
        return None
    ids = _prompt_ids(llm.runtime, prompt)
    sampling = engine.llm.sampling(llm, len(ids), max_tokens=answer, temperature=0.0,
                                   top_p=1.0, seed=0, stop=(), min_tokens=answer)
    load = _Load()
    log: Any = engine.request_log
    timeout = engine.llm.settings.request_timeout_s

    async def client() -> None:
        while not load.stop:
            call = Call(llm, ids, sampling, stream=True, endpoint="capacity-profile",
                        prompt_text="")
            try:
                call.start()
                async for _ in call.pieces(timeout):
                    pass
            except ApplianceError as exc:  # reported with the point
                load.errors.append(str(exc))
                load.stop = True
                return
            g = call.generation
            status = 200 if g.error is None and not call.timed_out else 503
            engine.llm.record(call, status, g.error)
            if status != 200:
                load.errors.append(g.error or "timed out")
                load.stop = True

    tasks = [asyncio.create_task(client()) for _ in range(streams)]
    try:
        entries, windows, stable = await _measure(sweep, probe, log.take, _llm_count, load)
    finally:
        load.stop = True
        await asyncio.gather(*tasks, return_exceptions=True)
        log.take()
    if load.errors:
        raise OperationFailed(f"{streams} streams, prompt {prompt}, answer {answer} tokens: "
                       f"{load.errors[0]}")
    ok = [e for e in entries if e.status == 200]
    seconds = sum(w.seconds for w in windows[-STABLE_WINDOWS:])
    point = {
        "streams": streams, "prompt_tokens": prompt, "answer_tokens": answer,
        "stable": stable, "windows": len(windows), "seconds": round(seconds, 3),
        "requests_per_s": round(len(ok) / seconds, 3),
        "tokens_per_s": round(sum(e.completion_tokens for e in ok) / seconds, 1),
        "ttft_ms": _rounded(percentiles([e.ttft_ms for e in ok if e.ttft_ms is not None]), 3),
        "itl_ms": _rounded(percentiles([e.itl_ms for e in ok if e.itl_ms is not None]), 4),
        "queue_ms": _rounded(percentiles([e.queue_ms for e in ok]), 3),
        "e2e_ms": _rounded(percentiles([e.e2e_ms for e in ok]), 3),
    }
    point.update(probe.figures())
    return point


def _prompt_ids(runtime: Any, tokens: int) -> list[int]:
    """A prompt of exactly ``tokens`` tokens, from ordinary words."""
    text = "the model reads this prompt so that its length is what the sweep asks for. "
    ids: list[int] = []
    while len(ids) < tokens:
        ids += runtime.encode(text)
    return ids[:tokens]


async def _sweep(home: Home, config: Config, name: str, version: int, sweep: Sweep,
                 progress: Progress, telemetry: Any) -> dict[str, Any]:
    settings = EngineSettings.from_config(config)
    settings = replace(settings, log_rows_per_second=0, poll_interval_s=3600.0,
                       max_batch_size=max(settings.max_batch_size, max(sweep.batch_sizes)),
                       queue_capacity=max(settings.queue_capacity,
                                          max(sweep.concurrency) * 2))
    collector = _Collector()
    llm_settings = replace(LlmSettings.from_config(config), log_text=False,
                           queue_capacity=max(config["llm.queue_capacity"],
                                              max(sweep.streams) * 2))
    source = _OneVersion(home, name, version)
    engine = _Engine(source, settings, request_log=collector,  # type: ignore[arg-type]
                     llm=LlmService(llm_settings, collector))  # type: ignore[arg-type]
    engine.runs = []
    progress(0.0, f"loading {name}@{version} as serving does")
    resident0 = _resident_now()
    await engine.start()
    try:
        model = engine.models.get((name, version))
        if model is None:
            failure = next(iter(engine.failures.values()), None)
            raise OperationFailed(f"{name}@{version} does not load: "
                           f"{failure.error if failure else 'unknown error'}")
        is_llm = model.llm is not None
        device = "cuda" if model.provider.startswith("CUDA") else "cpu"
        pid = getattr(model.llm.runtime, "pid", None) if model.llm is not None else None
        probe = Probe(pid or os.getpid(), device, telemetry)
        points: list[dict[str, Any]] = []
        plan = list(_points(sweep, is_llm))
        skipped: list[str] = []
        for i, (a, b, c) in enumerate(plan):
            if is_llm:
                label = f"{a} stream(s), prompt {b}, answer {c} tokens"
                progress(i / len(plan), label)
                point = await _llm_point(engine, model, sweep, probe, a, b, c)
                if point is None:
                    skipped.append(f"prompt {b} + answer {c} tokens is past the context "
                                   f"({model.llm.context_length})")  # type: ignore[union-attr]
                    continue
                progress((i + 1) / len(plan),
                         f"{label}: {point['tokens_per_s']} tokens/s, time to first token "
                         f"p95 {point['ttft_ms']['p95']} ms" + _unstable(point))
            else:
                label = f"batch size {a}, concurrency {b}"
                progress(i / len(plan), label)
                point = await _tabular_point(engine, model, sweep, probe, a, b)
                progress((i + 1) / len(plan),
                         f"{label}: {point['rows_per_s']} rows/s, p95 "
                         f"{point['latency_us']['p95'] / 1000:.2f} ms" + _unstable(point))
            points.append(point)
        return {
            "model": name, "version": version, "kind": "llm" if is_llm else "tabular",
            "device": device, "provider": model.provider,
            "settings": {"max_batch_size": settings.max_batch_size,
                         "max_queue_delay_us": settings.max_queue_delay_us,
                         "intra_op_threads": settings.intra_op_threads},
            "sweep": sweep.as_dict(), "points": points, "skipped": skipped,
            "resident_before_load_bytes": resident0,
            "model_bytes": model_bytes(source.model) if source.model is not None else 0,
            "kv": kv_geometry(Path(source.model), device) if is_llm and isinstance(
                source.model, Path) else None,
            "cpus": os.cpu_count() or 1,
        }
    finally:
        await asyncio.to_thread(engine.stop)


def _resident_now() -> int:
    from appliance.capacity.measure import resident_bytes

    return resident_bytes()


def _unstable(point: dict[str, Any]) -> str:
    return "" if point["stable"] else f" (not stable after {point['windows']} windows)"


def run_profile(home: Home, config: Config, name: str, version: int, sweep: Sweep, *,
                progress: Progress | None = None, telemetry: Any = None) -> dict[str, Any]:
    """Load ``name@version`` as serving would, sweep it, and return the profile (not yet
    stored: see ``appliance.capacity.store``)."""
    if telemetry is None:
        from appliance.gpu.telemetry import NvmlTelemetry

        telemetry = NvmlTelemetry()
    started = time.time()
    profile = asyncio.run(_sweep(home, config, name, version, sweep,
                                 progress or (lambda _f, _m: None), telemetry))
    profile["measured_at"] = started
    profile["duration_s"] = round(time.time() - started, 1)
    return profile


def kv_geometry(folder: Path, device: str) -> dict[str, int] | None:
    """What one token of one sequence holds in the KV cache, from the model folder:
    layers, KV heads, head size and bytes per value (the type of the model's past keys)."""
    try:
        model = json.loads((folder / "genai_config.json").read_text())["model"]
        decoder = model["decoder"]
        geometry = {"layers": int(decoder["num_hidden_layers"]),
                    "kv_heads": int(decoder.get("num_key_value_heads")
                                    or decoder["num_attention_heads"]),
                    "head_size": int(decoder["head_size"]),
                    "context_length": int(model["context_length"]),
                    "bytes": 2 if device == "cuda" else 4}
    except (OSError, KeyError, TypeError, ValueError):
        return None
    import onnx
    from google.protobuf.message import DecodeError

    try:
        graph = onnx.load(str(folder / decoder["filename"]), load_external_data=False).graph
    except (OSError, DecodeError):  # a graph onnx can not read keeps the default
        return geometry
    types = {1: 4, 10: 2, 16: 2, 11: 8}  # float, float16, bfloat16, double
    for tensor in graph.input:
        if tensor.name.startswith("past_key_values."):
            geometry["bytes"] = types.get(tensor.type.tensor_type.elem_type, 4)
            break
    return geometry


def model_bytes(path: Path | bytes) -> int:
    """The size of a model: a file's bytes, or every file of a model folder."""
    if isinstance(path, bytes):
        return len(path)
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size
