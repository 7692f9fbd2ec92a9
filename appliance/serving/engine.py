"""The serving engine: ONNX sessions, routing, hot swap and the request path.

One process owns every session. Each loaded version has its own batcher
thread. ``routes`` maps a model name to its ``Route`` (production, canary,
shadow) and is replaced as a whole, so a request sees either the old routing
or the new one, never a mix.

Hot swap: a poller thread reads the source's fingerprint every
``poll_interval_s``; when it moves, new versions are loaded and warmed beside
the old ones, the routes are switched in one assignment, and the versions no
longer routed are retired on the event loop's thread: their batcher finishes
what is queued and stops, and the session is freed with it. A version that
fails to load or warm is reported (log, metric, ``status()``) and the model
keeps its working routing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import sqlite3
import threading
import time
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from appliance.config import Config
from appliance.errors import ApplianceError, BadInput, NotFound, OperationFailed, Unavailable
from appliance.llm.folder import is_llm
from appliance.onnxtools.providers import ort_errors
from appliance.serving.batcher import Batcher, Job, Tally
from appliance.serving.codec import InferRequest, decode_request
from appliance.serving.llm import LlmService, LlmSettings, LoadedLlm, load_llm
from appliance.serving.metrics import Metrics
from appliance.serving.requestlog import Entry, KeepRate, RequestLog
from appliance.serving.signature import V2_TO_NUMPY, Signature, from_session
from appliance.serving.source import ModelSource, Route

log = logging.getLogger("appliance.serving")


@dataclass(frozen=True)
class EngineSettings:
    max_batch_size: int = 256
    max_queue_delay_us: int = 0
    queue_capacity: int = 1024
    intra_op_threads: int = 0
    log_rows_per_second: int = 1000  # per version; see requestlog.KeepRate
    poll_interval_s: float = 0.5
    explicit_idle_s: float = 300.0  # unload a version named explicitly after this long unused

    @classmethod
    def from_config(cls, config: Config) -> EngineSettings:
        return cls(
            max_batch_size=config["serving.max_batch_size"],
            max_queue_delay_us=config["serving.max_queue_delay_us"],
            queue_capacity=config["serving.queue_capacity"],
            intra_op_threads=config["serving.intra_op_threads"],
            log_rows_per_second=config["serving.log_rows_per_second"],
            poll_interval_s=config["serving.poll_interval_s"],
        )


class LoadedModel:
    """One version's session, signature and batcher."""

    def __init__(self, name: str, version: int, session: Any, signature: Signature,
                 provider: str, signed: bool = False,
                 recorded: Mapping[str, Any] | None = None) -> None:
        self.name = name
        self.recorded = recorded or {}  # the signature as the source records it (classes)
        self.signed = signed  # passed promotion: may be named by version
        self.version = version
        self.session = session
        self.signature = signature
        self.provider = provider
        self.key = (name, str(version))
        self.last_used = time.monotonic()
        self.batcher: Batcher | None = None
        self.llm: LoadedLlm | None = None  # a language model: text in, text out
        self.retired = False


@dataclass
class InferResult:
    model: LoadedModel
    request: InferRequest
    outputs: dict[str, np.ndarray]
    route: str


@dataclass
class LoadFailure:
    name: str
    version: int | None
    error: str
    at: float = field(default_factory=time.time)


def _warm_feed(signature: Signature) -> dict[str, np.ndarray]:
    feed = {}
    for spec in signature.inputs:
        shape = tuple(1 if d == -1 else d for d in spec.shape)
        if spec.datatype == "BYTES":
            feed[spec.name] = np.full(shape, "", dtype=object)
        else:
            feed[spec.name] = np.zeros(shape, dtype=V2_TO_NUMPY[spec.datatype])
    return feed


class Engine:
    def __init__(
        self,
        source: ModelSource,
        settings: EngineSettings,
        *,
        metrics: Metrics | None = None,
        request_log: RequestLog | None = None,
        providers: tuple[str, ...] | None = None,
        llm: LlmService | None = None,
    ) -> None:
        self.source = source
        self.llm = llm or LlmService(LlmSettings(), request_log)
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.request_log = request_log
        self.keep_rates: dict[tuple[str, str], KeepRate] = {}  # per version: kept inputs
        self.providers = providers
        self.routes: dict[str, Route] = {}
        self.models: dict[tuple[str, int], LoadedModel] = {}
        self.failures: dict[tuple[str, int | None], LoadFailure] = {}
        self.ready = False
        self._fingerprint: Hashable = object()
        self._lock = threading.Lock()  # loads and unloads from threads
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._errors = ort_errors() + (ApplianceError, OSError, ValueError, sqlite3.Error)
        self.on_threads = Tally()  # jobs on the batchers' threads, for the server's busy poll

    # ---- lifecycle -------------------------------------------------------

    async def start(self) -> None:
        """Load what is served, then poll for alias moves; call on the serving event loop."""
        self._loop = asyncio.get_running_loop()
        if self.providers is None:
            self.providers = await asyncio.to_thread(_detect_providers)
        if self.request_log is not None:
            self.request_log.start()
        await asyncio.to_thread(self.sync)
        self._poller = threading.Thread(target=self._poll, name="model-poller", daemon=True)
        self._poller.start()
        self.ready = True

    def stop(self) -> None:
        """Stop polling, let every batcher finish its queue, flush the request log and close
        the model source."""
        self.ready = False
        self._stop.set()
        if self._poller is not None:
            self._poller.join(5)
        for model in list(self.models.values()):
            if model.batcher is not None:
                model.batcher.stop()
        for model in list(self.models.values()):
            if model.batcher is not None:
                model.batcher.join(5)
            if model.llm is not None:
                model.llm.runtime.close()
        if self.request_log is not None:
            self.request_log.close()
        close = getattr(self.source, "close", None)  # the registry's database connection
        if callable(close):
            close()

    def _poll(self) -> None:
        while not self._stop.wait(self.settings.poll_interval_s):
            try:
                self._drop_dead_llms()
                self.sync()
                self._unload_idle()
            except self._errors as exc:
                log.error("model poll failed: %s", exc)

    # ---- loading and hot swap ---------------------------------------------

    def _load(self, name: str, version: int | None, explicit: bool = False) -> LoadedModel:
        import onnxruntime as ort

        resolved = self.source.resolve(name, version)
        if explicit and not resolved.signed:
            raise NotFound(_unsigned(name, resolved.version))
        existing = self.models.get((name, resolved.version))
        if existing is not None and not existing.retired:
            return existing
        if is_llm(resolved.signature):
            return self._load_llm(name, resolved.version, resolved.model,
                                  dict(resolved.signature), resolved.signed)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.settings.intra_op_threads or (os.cpu_count() or 1)
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.log_severity_level = 3
        # Spinning threads steal the CPU the HTTP loop needs on small machines.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        model_arg = str(resolved.model) if isinstance(resolved.model, Path) else resolved.model
        session = ort.InferenceSession(
            model_arg, sess_options=opts, providers=list(self.providers or ("CPUExecutionProvider",))
        )
        signature = from_session(session)
        outputs = signature.output_names
        warm = _warm_feed(signature)
        session.run(list(outputs), warm)  # the first run allocates; time the second
        started = time.perf_counter()
        session.run(list(outputs), warm)
        warm_us = (time.perf_counter() - started) * 1e6
        model = LoadedModel(name, resolved.version, session, signature,
                            session.get_providers()[0], signed=resolved.signed,
                            recorded=resolved.signature)
        if self._loop is None:
            raise RuntimeError("the engine is not started")
        model.batcher = Batcher(
            f"{name}@{resolved.version}",
            lambda feed: session.run(list(outputs), feed),
            outputs,
            batchable=signature.batchable,
            max_batch_size=self.settings.max_batch_size,
            max_queue_delay_us=self.settings.max_queue_delay_us,
            capacity=self.settings.queue_capacity,
            loop=self._loop,
            on_batch=lambda batch, rows, us: self._batch_done(model, batch, us),
            compute_us=warm_us,
            on_threads=self.on_threads,
        )
        self.models[(name, resolved.version)] = model
        self.failures.pop((name, resolved.version), None)
        self.metrics.model_loaded(model.key, model.provider)
        log.info("loaded %s version %s on %s", name, resolved.version, model.provider)
        return model

    def _load_llm(self, name: str, version: int, folder: Any, info: dict[str, Any],
                  signed: bool) -> LoadedModel:
        cuda = "CUDAExecutionProvider" in (self.providers or ())
        loaded = load_llm(name, version, Path(folder), info, cuda=cuda,
                          settings=self.llm.settings, factory=self.llm.runtime_factory,
                          loop=self._loop)
        model = LoadedModel(name, version, None, Signature((), ()), loaded.provider,
                            signed=signed)
        model.llm = loaded
        self.models[(name, version)] = model
        self.failures.pop((name, version), None)
        self.metrics.model_loaded(model.key, model.provider)
        log.info("loaded language model %s version %s on %s", name, version, model.provider)
        return model

    def sync(self) -> bool:
        """Bring routes in line with the source; True when they were re-read."""
        fingerprint = self.source.fingerprint()
        if fingerprint == self._fingerprint:
            return False
        served = self.source.list_served()
        with self._lock:
            old = self.routes
            new: dict[str, Route] = {}
            for name, route in served.items():
                if self._load_route(route):
                    new[name] = route
                elif name in old:
                    new[name] = old[name]  # a broken version never replaces a working one
            self.routes = new
            self._fingerprint = fingerprint
            keep = served_versions(new)
            was = served_versions(old)
            retire = [m for k, m in self.models.items() if k in was and k not in keep]
        for name, route in new.items():
            if old.get(name) not in (None, route):
                self.metrics.swapped(name)
                log.info("model %s now served by %s", name, route)
        for model in retire:
            self._call_on_loop(self._retire, model)
        return True

    def _load_route(self, route: Route) -> bool:
        ok = True
        for version in route.versions:
            if (route.name, version) in self.models:
                continue
            try:
                self._load(route.name, version)
            except self._errors as exc:
                ok = False
                message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                self.failures[(route.name, version)] = LoadFailure(route.name, version, message)
                self.metrics.load_failed((route.name, str(version)))
                log.error("model %s version %s failed to load, not served: %s",
                          route.name, version, message)
        return ok

    def _drop_dead_llms(self) -> None:
        """A language model whose process died is dropped, and loaded again by the sync
        that follows (its requests in flight were answered with an error)."""
        dead = [m for m in list(self.models.values())
                if m.llm is not None and not getattr(m.llm.runtime, "alive", True)]
        if not dead:
            return
        with self._lock:
            for model in dead:
                if self.models.get((model.name, model.version)) is model:
                    del self.models[(model.name, model.version)]
                model.retired = True
                self.metrics.model_unloaded(model.key)
                self.metrics.load_failed(model.key)
                log.error("language model %s version %s: its process exited; loading it again",
                          model.name, model.version)
            self._fingerprint = object()  # the next sync reads the routes and loads it
        for model in dead:
            threading.Thread(target=model.llm.runtime.close, name="llm-dead",  # type: ignore[union-attr]
                             daemon=True).start()

    def _unload_idle(self) -> None:
        routed = served_versions(self.routes)
        cutoff = time.monotonic() - self.settings.explicit_idle_s
        for key, model in list(self.models.items()):
            if key not in routed and model.last_used < cutoff:
                self._call_on_loop(self._retire, model)

    def _call_on_loop(self, fn: Any, *args: Any) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(fn, *args)

    def _retire(self, model: LoadedModel) -> None:
        """On the loop thread: no new job can reach this version after this call."""
        key = (model.name, model.version)
        if key in served_versions(self.routes):
            return  # routed again since retirement was scheduled
        if self.models.get(key) is model:
            del self.models[key]
        model.retired = True
        if model.batcher is not None:
            model.batcher.stop()  # queued jobs still run, then the session goes
        if model.llm is not None:  # running answers finish on its thread, then it stops
            threading.Thread(target=model.llm.runtime.close, name="llm-retire",
                             daemon=True).start()
        self.metrics.model_unloaded(model.key)
        log.info("unloaded %s version %s", model.name, model.version)

    # ---- lookups ----------------------------------------------------------

    def served_model(self, name: str) -> tuple[Route, LoadedModel]:
        route = self.routes.get(name)
        if route is None:
            failed = [f for (n, _), f in self.failures.items() if n == name]
            if failed:
                raise Unavailable(f"model '{name}' is not ready: {failed[-1].error}")
            raise NotFound(f"model '{name}' is not served; it has no production version")
        model = self.models.get((name, route.primary))
        if model is None:  # dropped a moment ago (its process died) and being loaded again
            raise Unavailable(f"model '{name}' is loading; retry")
        return route, model

    def llm_load(self) -> dict[tuple[str, str], tuple[int, int]]:
        """(running, waiting) requests of each loaded language-model version."""
        return {m.key: m.llm.runtime.load() for m in list(self.models.values())
                if m.llm is not None}

    def served_llm(self, name: str) -> LoadedLlm:
        """The production version of a language model; 404 (OpenAI's model_not_found) for
        a name that serves none."""
        try:
            _route, model = self.served_model(name)
        except NotFound:
            raise NotFound(f"the model '{name}' does not exist or is not served",
                           param="model") from None
        if model.llm is None:
            raise BadInput(f"model '{name}' is a tabular model; send it tensors at "
                           f"/v2/models/{name}/infer", param="model")
        model.last_used = time.monotonic()
        return model.llm

    async def version(self, name: str, version: int) -> LoadedModel:
        """A version named explicitly, loaded on first use; only one that passed promotion
        (signed), so that naming a version is no way around the gates."""
        model = self.models.get((name, version))
        if model is None or model.retired:
            model = await asyncio.to_thread(self._load_explicit, name, version)
        if not model.signed:
            raise NotFound(_unsigned(name, version))
        model.last_used = time.monotonic()
        return model

    def _load_explicit(self, name: str, version: int) -> LoadedModel:
        with self._lock:
            try:
                return self._load(name, version, explicit=True)
            except ApplianceError:
                raise
            except self._errors as exc:
                raise Unavailable(f"model '{name}' version {version} can not be loaded: {exc}"
                                  ) from exc

    # ---- the request path --------------------------------------------------

    async def infer(self, name: str, version: int | None, body: bytes,
                    header_length: int | None, arrived: float,
                    alone: bool = False) -> InferResult:
        """Decode, route, run and record one request. ``alone``: the server has no other
        request in hand, so an idle batcher may run it at once (see ``Batcher.submit``)."""
        max_rows = self.settings.max_batch_size
        shadow: LoadedModel | None = None
        if version is None:
            route, model = self.served_model(name)
            if model.llm is not None:
                raise BadInput(f"model '{name}' is a language model; use POST "
                               "/v1/chat/completions or /v1/completions")
            key = model.key
            try:
                request = decode_request(body, header_length, model.signature, max_rows)
            except BadInput as exc:
                self._failed(model, None, "primary", exc, arrived)
                raise
            picked, kind = route.pick(request.id, random.random())
            if picked != model.version:
                chosen = self.models[(name, picked)]
                if chosen.signature != model.signature:
                    request = decode_request(body, header_length, chosen.signature, max_rows)
                model = chosen
            if route.shadow is not None:
                shadow = self.models.get((name, route.shadow))
        else:
            model = await self.version(name, version)
            if model.llm is not None:
                raise BadInput(f"model '{name}' is a language model; use POST "
                               "/v1/chat/completions or /v1/completions")
            kind = "explicit"
            try:
                request = decode_request(body, header_length, model.signature, max_rows)
            except BadInput as exc:
                self._failed(model, None, kind, exc, arrived)
                raise
        key = model.key
        job = self._job(request)
        if model.batcher is None or model.retired:
            raise Unavailable(f"model '{name}' is being replaced; retry")
        try:
            model.batcher.submit(job, alone=alone and shadow is None)
        except Unavailable as exc:
            self.metrics.request_failed(key, "REJECTED", time.perf_counter() - arrived)
            self._failed(model, request, kind, exc, arrived, metric=False)
            raise
        self.metrics.pending[key] += 1
        if shadow is not None:
            self._shadow(shadow, request, arrived)
        try:
            await job.future
        finally:
            self.metrics.pending[key] -= 1
        if job.error is not None:
            exc2 = _run_error(name, job.error)
            self._failed(model, request, kind, exc2, arrived, job=job)
            raise exc2
        seconds = time.perf_counter() - arrived
        self.metrics.request_done(key, seconds)
        if self.request_log is not None:
            weight = 1.0 if shadow is not None else self._keep_weight(key, request.rows)
            kept = weight is not None
            self.request_log.record(Entry(
                time.time(), name, model.version, kind, request.id, 200, int(seconds * 1e6),
                job.queue_us, job.batch_rows, request.rows, None,
                request.inputs if kept else None, job.outputs if kept else None, weight,
            ))
        return InferResult(model, request, job.outputs, kind)

    def _keep_weight(self, key: tuple[str, str], rows: int) -> float | None:
        """Whether the request log keeps this request's inputs: its weight, or None."""
        rate = self.keep_rates.get(key)
        if rate is None:
            rate = self.keep_rates[key] = KeepRate(self.settings.log_rows_per_second)
        return rate.weight(rows)

    def _job(self, request: InferRequest) -> Job:
        if self._loop is None:
            raise Unavailable("the serving engine is not started")
        return Job(
            inputs=request.inputs,
            rows=request.rows,
            shape_key=tuple(a.shape[1:] for a in request.inputs.values()),
            future=self._loop.create_future(),
        )

    def _shadow(self, shadow: LoadedModel, request: InferRequest, arrived: float) -> None:
        job = self._job(request)
        if shadow.batcher is None or shadow.retired:
            return
        try:
            shadow.batcher.submit(job)
        except Unavailable:
            self.metrics.request_failed(shadow.key, "REJECTED", 0.0)
            return
        self.metrics.shadow_count[shadow.key] += 1

        def done(_: asyncio.Future[None]) -> None:
            if self.request_log is None:
                return
            status = 200 if job.error is None else 500
            self.request_log.record(Entry(
                time.time(), shadow.name, shadow.version, "shadow", request.id, status,
                int((time.perf_counter() - arrived) * 1e6), job.queue_us, job.batch_rows,
                request.rows, None if job.error is None else str(job.error)[:500],
                request.inputs, job.outputs or None, 1.0,
            ))

        job.future.add_done_callback(done)

    def _batch_done(self, model: LoadedModel, batch: list[Job], compute_us: int) -> None:
        rows = sum(j.rows for j in batch if j.error is None)
        queue_us = sum(j.queue_us for j in batch)
        self.metrics.batch_done(model.key, rows, queue_us, compute_us, requests=len(batch),
                                batch_rows=sum(j.rows for j in batch))

    def _failed(self, model: LoadedModel, request: InferRequest | None, kind: str,
                exc: ApplianceError, arrived: float, job: Job | None = None,
                metric: bool = True) -> None:
        seconds = time.perf_counter() - arrived
        if metric:
            reason = "BACKEND" if isinstance(exc, OperationFailed) else "OTHER"
            self.metrics.request_failed(model.key, reason, seconds)
        if self.request_log is not None:
            self.request_log.record(Entry(
                time.time(), model.name, model.version, kind,
                request.id if request else None, exc.status, int(seconds * 1e6),
                job.queue_us if job else 0, job.batch_rows if job else 0,
                request.rows if request else 0, exc.message[:500],
            ))

    def status(self) -> dict[str, Any]:
        """What is served, on which provider, and which loads failed: for the console."""
        return {
            "ready": self.ready,
            "providers": list(self.providers or ()),
            "routes": {n: {"primary": r.primary, "canary": r.canary,
                           "canary_weight": r.canary_weight, "shadow": r.shadow}
                       for n, r in self.routes.items()},
            "loaded": [{"model": m.name, "version": m.version, "provider": m.provider}
                       for m in self.models.values()],
            "failures": [{"model": f.name, "version": f.version, "error": f.error, "at": f.at}
                         for f in self.failures.values()],
        }


def _unsigned(name: str, version: int) -> str:
    return (f"model '{name}' version {version} is not served by version: it never passed "
            "promotion (it has no model signature)")


def _run_error(name: str, exc: BaseException) -> ApplianceError:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if type(exc).__name__ in ("InvalidArgument", "ValueError", "TypeError"):
        return BadInput(f"model '{name}' refused the input: {text}")
    return OperationFailed(f"model '{name}' failed to run: {text}")


def _detect_providers() -> tuple[str, ...]:
    from appliance.gpu.inventory import NvmlSource
    from appliance.onnxtools.providers import check_providers

    return check_providers(NvmlSource().read()).usable


def served_versions(routes: Mapping[str, Route]) -> set[tuple[str, int]]:
    return {(n, v) for n, r in routes.items() for v in r.versions}
