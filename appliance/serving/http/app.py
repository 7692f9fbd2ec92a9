"""The application of the serving daemon: routing, authorisation, errors and handlers.

Open Inference Protocol (KServe V2) REST, Triton's binary tensors, and the parts
of Triton's HTTP API its client calls beside inference: model configuration,
statistics and the repository index. ``ServingApp.request`` is the one request
adapter: the built-in server (``transport.py``) and the ASGI entry (``__call__``)
both hand it the method, the raw request target, headers and body, so path
decoding, body limits, in-flight counts and the last-resort 500 exist once.

Authorisation is a callable given to the factory: it receives an
``AuthRequest`` for each inference or model request and raises
``Unauthorized`` or ``Forbidden``. The default lets loopback clients in without a
token when ``serving.anonymous_loopback`` is on, and anyone else with an API token
(``Authorization: Bearer apl_...``) whose scopes and user's role grant ``infer``.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import json
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any, NamedTuple
from urllib.parse import unquote_to_bytes

import orjson

import appliance.serving.http.openai as openai
from appliance import __version__
from appliance.auth import authorize as authorize_principal
from appliance.auth.tokens import authenticate_token
from appliance.config import Config, load_config, resolve_home
from appliance.errors import (
    ApplianceError,
    BadInput,
    NotFound,
    Unauthorized,
    Unavailable,
)
from appliance.gpu import telemetry as gpu_telemetry
from appliance.prompts.serving import PromptSource
from appliance.serving.codec import encode_response
from appliance.serving.engine import Engine, EngineSettings
from appliance.serving.llm import Guardrails, LlmService, LlmSettings
from appliance.serving.metrics import Metrics
from appliance.serving.requestlog import RequestLog
from appliance.serving.source import ModelSource
from appliance.storage.home import Home

log = logging.getLogger("appliance.serving")

JSON = b"application/json"
Headers = list[tuple[bytes, bytes]]
# The body is bytes, or (a streamed answer) an async iterator of bytes the server sends
# as it comes and closes (``aclose``) when the client goes away.
Response = tuple[int, Headers, Any]

MAX_VERSION = 2**63 - 1  # what SQLite's INTEGER holds

# Triton's model configuration names a datatype TYPE_<V2 name>, except BYTES.
_CONFIG_TYPES = {"BYTES": "TYPE_STRING"}


@functools.lru_cache(maxsize=1024)
def is_loopback(client: str | None) -> bool:
    """Whether a peer address is loopback: 127.0.0.0/8, ::1, or 127.x mapped into IPv6.

    Cached: a server sees few distinct peers, and parsing one costs more than the model."""
    if client is None:
        return False
    try:
        address = ipaddress.ip_address(client.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


class AuthRequest(NamedTuple):
    """What an authorizer sees of a request (immutable; cheap to make per request)."""

    client: str | None  # peer address
    headers: Mapping[bytes, bytes]  # lower-case names
    path: str
    scope: str  # 'infer'
    model: str  # empty for requests about every model (statistics, the repository index)


Authorizer = Callable[[AuthRequest], None]


def loopback_authorizer(anonymous_loopback: bool) -> Authorizer:
    """Allow loopback clients without a token when configured; refuse everything else."""

    def authorize(req: AuthRequest) -> None:
        if anonymous_loopback and is_loopback(req.client):
            return
        raise Unauthorized(f"a bearer token with the '{req.scope}' scope is required")

    return authorize


def token_authorizer(home: Home, anonymous_loopback: bool) -> Authorizer:
    """The daemon's default: loopback clients without a token when configured; anyone
    with an API token whose scopes and user's role grant ``infer``. A token that is sent
    is always checked, from loopback too; revocation counts from the next request."""
    anonymous = loopback_authorizer(anonymous_loopback)

    def authorize(req: AuthRequest) -> None:
        header = req.headers.get(b"authorization")
        if header is None:
            anonymous(req)
            return
        scheme, _, token = header.decode("latin-1").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("Authorization must be 'Bearer TOKEN'")
        with home.db() as db:
            principal = authenticate_token(db, token.strip())
        authorize_principal(principal, "infer")

    return authorize


def json_response(status: int, value: Any, extra: Headers | None = None) -> Response:
    body = json.dumps(value, separators=(",", ":")).encode()
    return status, [(b"content-type", JSON), *(extra or [])], body


def error_response(exc: ApplianceError) -> Response:
    extra: Headers = []
    if exc.status == 503:
        extra.append((b"retry-after", b"1"))
    elif exc.status == 401:
        extra.append((b"www-authenticate", b'Bearer realm="appliance"'))
    return json_response(exc.status, {"error": exc.message}, extra)


INTERNAL_ERROR = json_response(500, {"error": "internal error; see the serving log"})


def decode_target(target: bytes) -> list[str]:
    """A request target's path segments, each percent-decoded once, as UTF-8.

    Split before decoding, so ``%2F`` stays inside its segment; a query is dropped. The
    absolute form (``http://host/path``) is taken as its path."""
    path = target.split(b"?", 1)[0].split(b"#", 1)[0]
    if not path.startswith(b"/"):
        scheme, sep, rest = path.partition(b"://")
        if not sep or not scheme.isalpha():
            raise BadInput("the request target must be a path starting with '/'")
        path = b"/" + rest.partition(b"/")[2]
    try:
        return [unquote_to_bytes(p).decode("utf-8") for p in path.strip(b"/").split(b"/")]
    except UnicodeDecodeError:
        raise BadInput("the request path is not UTF-8 once percent-decoded") from None


def parse_version(name: str, text: str) -> int:
    """A version segment: ASCII digits only, 1 or more, within SQLite's integers."""
    if not (text.isascii() and text.isdigit()) or len(text) > 19:
        raise BadInput(f"model '{name}': version must be a positive integer, not '{text}'")
    version = int(text)
    if not 1 <= version <= MAX_VERSION:
        raise BadInput(f"model '{name}': version must be a positive integer, not '{text}'")
    return version


class ServingApp:
    def __init__(self, engine: Engine, *, authorizer: Authorizer, max_body_bytes: int,
                 home: Home | None = None, busy_poll_us: int = 100,
                 config: Config | None = None,
                 telemetry: gpu_telemetry.TelemetrySource | None = None) -> None:
        self.engine = engine
        self.telemetry = telemetry  # GPU figures on /metrics (DCGM's names)
        self.home = home  # where run() keeps the daemon's heartbeat row
        self.config = config  # the built-in server's limits, when made by create_app
        self.authorizer = authorizer
        self.busy_poll_us = busy_poll_us  # the built-in server's polling window
        # Requests read and not yet answered, over every connection: one alone may run inline.
        self.in_flight = 0
        self.max_body_bytes = max_body_bytes
        self._started = False
        self._start_lock: asyncio.Lock | None = None
        self.openai = openai.OpenAI(engine, prompts=None if home is None else PromptSource(
            home.db, max_age_s=engine.settings.poll_interval_s))

    async def startup(self) -> None:
        if self._started:
            return
        if self._start_lock is None:
            self._start_lock = asyncio.Lock()
        async with self._start_lock:
            if not self._started:
                if self.home is not None and self.config is not None:
                    self.engine.llm.guardrails = await asyncio.to_thread(
                        self._guardrails, self.home, self.config)
                await self.engine.start()
                self._started = True

    @staticmethod
    def _guardrails(home: Home, config: Config) -> Guardrails | None:
        """The guardrails of language-model requests (``guardrails.*``)."""
        with home.db() as db:
            return Guardrails.load(config, db, home.blobs)

    async def shutdown(self) -> None:
        if self._started:
            await asyncio.to_thread(self.engine.stop)
            self._started = False

    # ---- the request adapter, shared by both servers ------------------------

    def too_large(self, size: int) -> Response | None:
        """The answer to a body of ``size`` bytes (so far) when it is over the limit."""
        if size > self.max_body_bytes:
            return json_response(413, {"error": f"request body is larger than "
                                                f"{self.max_body_bytes} bytes"})
        return None

    def error_body(self, target: bytes, status: int, message: str,
                   extra: Headers | None = None) -> Response:
        """The answer to a request the server refused before the application saw it (too
        large, malformed, too slow): OpenAI's error shape under /v1, ours elsewhere."""
        if target.startswith(b"/v1/") or target == b"/v1":
            doc = openai.error_doc(status, message)
            return status, [(b"content-type", JSON), *(extra or [])], orjson.dumps(doc)
        return json_response(status, {"error": message}, extra)

    def request(self, method: str, target: bytes, headers: Mapping[bytes, bytes],
                body: bytes, client: str | None,
                gone: asyncio.Event | None = None) -> Coroutine[Any, Any, Response]:
        """Answer one request read in full; never raises. Counted in flight from this call,
        not from when the answer starts: requests read in one turn of the loop all count
        before the first runs, so none of them is taken to be alone (and run unmerged)."""
        self.in_flight += 1
        return self._request(method, target, headers, body, client, gone)

    async def _request(self, method: str, target: bytes, headers: Mapping[bytes, bytes],
                       body: bytes, client: str | None,
                       gone: asyncio.Event | None = None) -> Response:
        try:
            try:
                parts = decode_target(target)
            except ApplianceError as exc:
                return error_response(exc)
            return await self.handle(method, parts, headers, body, client, gone)
        except Exception:  # a bug, not a bad request: answer 500 rather than hang the client
            log.exception("request failed")
            return INTERNAL_ERROR
        finally:
            self.in_flight -= 1

    # ---- one request ------------------------------------------------------

    async def handle(self, method: str, path: str | list[str], headers: Mapping[bytes, bytes],
                     body: bytes, client: str | None,
                     gone: asyncio.Event | None = None) -> Response:
        """Route a decoded path (a string, or its segments); errors become their answers."""
        parts = path.strip("/").split("/") if isinstance(path, str) else path
        if parts[0] == "v1":
            try:
                return await self._v1(method, parts, headers, body, client, gone)
            except ApplianceError as exc:
                return openai.error_response(exc)
        try:
            return await self._route(method, parts, headers, body, client)
        except ApplianceError as exc:
            return error_response(exc)

    async def _v1(self, method: str, parts: list[str], headers: Mapping[bytes, bytes],
                  body: bytes, client: str | None, gone: asyncio.Event | None) -> Response:
        """OpenAI's API for the language models served (see ``openai.py``)."""
        path = "/" + "/".join(parts)
        rest = parts[1:]
        if rest[:1] == ["models"] and len(rest) <= 2:
            self._only(method, "GET")
            self.authorizer(AuthRequest(client, headers, path, "infer", ""))
            return self.openai.models(rest[1] if len(rest) == 2 else None)
        endpoints = {("chat", "completions"): "chat", ("completions",): "completions"}
        endpoint = endpoints.get(tuple(rest))
        if endpoint is None:
            raise NotFound(f"no such endpoint: {path}")
        self._only(method, "POST")
        self.authorizer(AuthRequest(client, headers, path, "infer", ""))
        if not self.engine.ready:
            raise Unavailable("the server is starting: models are loading")
        return await self.openai.complete(endpoint, body, gone)

    async def _route(self, method: str, parts: list[str], headers: Mapping[bytes, bytes],
                     body: bytes, client: str | None) -> Response:
        path = "/" + "/".join(parts)
        if parts[0] == "metrics" and len(parts) == 1:
            self._only(method, "GET")
            text = self.engine.metrics.render() + self.engine.llm.metrics.render(
                self.engine.llm_load())
            if self.telemetry is not None:  # NVML reads (and GPM's window) off the loop
                text += gpu_telemetry.render(await asyncio.to_thread(self.telemetry.read))
            return (200, [(b"content-type", b"text/plain; version=0.0.4; charset=utf-8")],
                    text.encode())
        if parts[0] != "v2":
            raise NotFound(f"no such endpoint: {path}")
        if len(parts) == 1:
            self._only(method, "GET")
            return json_response(200, {"name": "appliance", "version": __version__,
                                       "extensions": ["binary_tensor_data", "statistics",
                                                      "model_configuration",
                                                      "model_repository"]})
        if parts[1] == "health" and len(parts) == 3 and parts[2] in ("live", "ready"):
            self._only(method, "GET")
            if parts[2] == "live":
                return json_response(200, {"live": True})
            if not self.engine.ready:
                raise Unavailable("the server is starting: models are loading")
            return json_response(200, {"ready": True})
        if parts[1] == "repository":
            return await self._repository(method, parts[2:], path, headers, body, client)
        if parts[1] in ("logging", "trace", "systemsharedmemory", "cudasharedmemory"):
            self.authorizer(AuthRequest(client, headers, path, "infer", ""))
            return self._unoffered(method, parts[1:], path)
        if parts[1] != "models" or len(parts) < 3 or not parts[2]:
            raise NotFound(f"no such endpoint: {path}")
        if parts[2:] == ["stats"]:
            self._only(method, "GET")
            self.authorizer(AuthRequest(client, headers, path, "infer", ""))
            return json_response(200, {"model_stats": self._stats(None, None)})
        name = parts[2]
        rest = parts[3:]
        version: int | None = None
        if rest[:1] == ["versions"]:
            if len(rest) < 2:
                raise NotFound(f"no such endpoint: {path}")
            version = parse_version(name, rest[1])
            rest = rest[2:]
        if rest == ["trace", "setting"]:
            self.authorizer(AuthRequest(client, headers, path, "infer", name))
            return self._unoffered(method, ["trace", "setting"], path)
        action = rest[0] if rest else ""
        if len(rest) > 1 or action not in ("", "ready", "infer", "config", "stats"):
            raise NotFound(f"no such endpoint: {path}")
        self.authorizer(AuthRequest(client, headers, path, "infer", name))
        if action == "infer":
            self._only(method, "POST")
            return await self._infer(name, version, headers, body)
        self._only(method, "GET")
        if action == "ready":
            try:
                await self._model(name, version)
            except Unavailable:
                return json_response(503, {"name": name, "ready": False},
                                     [(b"retry-after", b"1")])
            return json_response(200, {"name": name, "ready": True})
        if action == "config":
            return json_response(200, await self._config(name, version))
        if action == "stats":
            await self._model(name, version)  # 404 for a model or version not served
            return json_response(200, {"model_stats": self._stats(name, version)})
        return json_response(200, await self._metadata(name, version))

    @staticmethod
    def _only(method: str, allowed: str) -> None:
        if method != allowed and not (allowed == "GET" and method == "HEAD"):
            raise _MethodNotAllowed(f"use {allowed} here, not {method}")

    async def _model(self, name: str, version: int | None) -> Any:
        if version is None:
            return self.engine.served_model(name)[1]
        return await self.engine.version(name, version)

    async def _metadata(self, name: str, version: int | None) -> dict[str, Any]:
        model = await self._model(name, version)
        doc: dict[str, Any] = {"name": name}
        if version is None:
            doc["versions"] = [str(v) for v in self.engine.routes[name].versions]
        else:
            doc["versions"] = [str(version)]
        outputs = [s.as_dict() for s in model.signature.outputs]
        scores, classes = _class_labels(model.recorded, model.signature.output_names)
        for out in outputs:
            if out["name"] == scores:
                out["parameters"] = {"classes": classes}
        doc.update({
            "platform": "onnxruntime_onnx",
            "inputs": [s.as_dict() for s in model.signature.inputs],
            "outputs": outputs,
            "parameters": {"execution_provider": model.provider,
                           "version": str(model.version)},
        })
        return doc

    async def _config(self, name: str, version: int | None) -> dict[str, Any]:
        """Triton's model configuration (its ModelConfig message as JSON) of a version."""
        model = await self._model(name, version)
        signature = model.signature
        batchable = signature.batchable

        def tensors(specs: Any) -> list[dict[str, Any]]:
            return [{"name": s.name,
                     "data_type": _CONFIG_TYPES.get(s.datatype, "TYPE_" + s.datatype),
                     "format": "FORMAT_NONE",
                     "dims": list(s.shape[1:] if batchable else s.shape)} for s in specs]

        versions = (list(self.engine.routes[name].versions) if version is None
                    and name in self.engine.routes else [model.version])
        settings = self.engine.settings
        on_gpu = model.provider == "CUDAExecutionProvider"
        return {
            "name": name,
            "platform": "onnxruntime_onnx",
            "backend": "onnxruntime",
            "version_policy": {"specific": {"versions": versions}},
            "max_batch_size": settings.max_batch_size if batchable else 0,
            "input": tensors(signature.inputs),
            "output": tensors(signature.outputs),
            "dynamic_batching": {
                "max_queue_delay_microseconds": settings.max_queue_delay_us,
                "default_queue_policy": {"max_queue_size": settings.queue_capacity},
            } if batchable else None,
            "instance_group": [{"name": f"{name}_0", "kind": "KIND_GPU" if on_gpu
                                else "KIND_CPU", "count": 1, "gpus": [0] if on_gpu else []}],
            "parameters": {"execution_provider": {"string_value": model.provider}},
        }

    def _stats(self, name: str | None, version: int | None) -> list[dict[str, Any]]:
        """Triton's statistics of each loaded version (or of one model, or one version)."""
        out = []
        for key in sorted(self.engine.metrics.stat_keys()):
            if name is not None and key[0] != name:
                continue
            if version is not None and key[1] != str(version):
                continue
            out.append(self.engine.metrics.triton_stats(key))
        if name is not None and version is not None and not out:
            out.append(self.engine.metrics.triton_stats((name, str(version))))
        return out

    async def _repository(self, method: str, rest: list[str], path: str,
                          headers: Mapping[bytes, bytes], body: bytes,
                          client: str | None) -> Response:
        if rest == ["index"]:
            self._only(method, "POST")
            self.authorizer(AuthRequest(client, headers, path, "infer", ""))
            ready_only = False
            if body.strip():
                try:
                    doc = orjson.loads(body)
                except orjson.JSONDecodeError as exc:
                    raise BadInput(f"request body is not valid JSON: {exc}") from None
                if not isinstance(doc, dict):
                    raise BadInput("request body must be a JSON object")
                ready_only = doc.get("ready") is True
            return json_response(200, self._index(ready_only))
        if len(rest) == 3 and rest[0] == "models" and rest[2] in ("load", "unload"):
            self._only(method, "POST")
            name = rest[1]
            self.authorizer(AuthRequest(client, headers, path, "infer", name))
            if rest[2] == "load" and name in self.engine.routes:
                return json_response(200, {})  # served already: loading is done
            raise BadInput(f"model '{name}': the server loads and unloads models by their "
                           "registry aliases; promote a version or move its alias instead")
        raise NotFound(f"no such endpoint: {path}")

    @staticmethod
    def _unoffered(method: str, rest: list[str], path: str) -> Response:
        """Triton's logging, trace and shared-memory endpoints, answered truthfully: the
        settings in force, and no shared-memory regions (tensors travel in the body)."""
        if rest == ["logging"]:
            if method == "POST":
                raise BadInput("the log level is set in the configuration file (log_level), "
                               "not by a client")
            ServingApp._only(method, "GET")
            level = log.getEffectiveLevel()
            return json_response(200, {
                "log_file": "", "log_info": level <= logging.INFO,
                "log_warning": level <= logging.WARNING, "log_error": level <= logging.ERROR,
                "log_verbose_level": 1 if level <= logging.DEBUG else 0,
                "log_format": "default"})
        if rest == ["trace", "setting"]:
            if method == "POST":
                raise BadInput("request tracing is not offered; see /metrics and the "
                               "request log")
            ServingApp._only(method, "GET")
            return json_response(200, {"trace_level": ["OFF"], "trace_rate": "1000",
                                       "trace_count": "-1", "log_frequency": "0",
                                       "trace_file": "", "trace_mode": "triton"})
        kind = rest[0]
        if rest[1:] == ["status"]:
            ServingApp._only(method, "GET")
            return json_response(200, [])
        if len(rest) == 4 and rest[1] == "region" and rest[3] == "status":
            ServingApp._only(method, "GET")
            raise NotFound(f"no {kind} region '{rest[2]}' is registered")
        if len(rest) == 4 and rest[1] == "region" and rest[3] == "register":
            ServingApp._only(method, "POST")
            raise BadInput("shared memory is not offered; send tensors in the request body "
                           "(binary tensors avoid JSON's cost)")
        if rest[1:] == ["unregister"] or (len(rest) == 4 and rest[1] == "region"
                                           and rest[3] == "unregister"):
            ServingApp._only(method, "POST")
            return json_response(200, {})  # none is registered: nothing to undo
        raise NotFound(f"no such endpoint: {path}")

    def _index(self, ready_only: bool) -> list[dict[str, str]]:
        rows: list[dict[str, str]] = []
        seen: set[tuple[str, int]] = set()
        for (name, version), _model in sorted(self.engine.models.items()):
            seen.add((name, version))
            rows.append({"name": name, "version": str(version), "state": "READY"})
        if not ready_only:
            for (name, failed), failure in sorted(self.engine.failures.items(),
                                                  key=lambda kv: (kv[0][0], kv[0][1] or 0)):
                if failed is not None and (name, failed) in seen:
                    continue
                rows.append({"name": name, "version": "" if failed is None else str(failed),
                             "state": "UNAVAILABLE", "reason": failure.error})
        return rows

    async def _infer(self, name: str, version: int | None, headers: Mapping[bytes, bytes],
                     body: bytes) -> Response:
        arrived = time.perf_counter()
        raw = headers.get(b"inference-header-content-length")
        header_length = None
        if raw is not None:
            if not raw.isdigit():
                raise BadInput("Inference-Header-Content-Length must be a non-negative integer")
            header_length = int(raw)
        if headers.get(b"content-encoding", b"identity") not in (b"identity", b""):
            raise BadInput("compressed request bodies are not accepted; send them uncompressed")
        result = await self.engine.infer(name, version, body, header_length, arrived,
                                         alone=self.in_flight <= 1)
        data, json_length = encode_response(name, result.model.version, result.request,
                                            result.outputs)
        if json_length is None:
            return 200, [(b"content-type", JSON)], data
        return 200, [(b"content-type", b"application/octet-stream"),
                     (b"inference-header-content-length", str(json_length).encode())], data

    # ---- ASGI -------------------------------------------------------------

    async def __call__(self, scope: dict[str, Any], receive: Callable[[], Awaitable[Any]],
                       send: Callable[[Any], Awaitable[None]]) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        await self.startup()
        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        chunks: list[bytes] = []
        size = 0
        more = True
        refused: Response | None = None
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            refused = self.too_large(size)
            if refused is not None:
                break
            chunks.append(chunk)
            more = message.get("more_body", False)
        if refused is None:
            raw = scope.get("raw_path")
            target = raw if isinstance(raw, bytes) else _quote_path(scope["path"])
            client = scope.get("client")
            refused = await self.request(scope["method"], target, headers, b"".join(chunks),
                                         client[0] if client else None)
        status, hdrs, body = refused
        if not isinstance(body, (bytes, bytearray)):  # a streamed answer
            await send({"type": "http.response.start", "status": status, "headers": hdrs})
            try:
                async for chunk in body:
                    await send({"type": "http.response.body", "body": chunk,
                                "more_body": True})
            finally:
                await body.aclose()
            await send({"type": "http.response.body", "body": b""})
            return
        await send({"type": "http.response.start", "status": status,
                    "headers": [*hdrs, (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    async def _lifespan(self, receive: Callable[[], Awaitable[Any]],
                        send: Callable[[Any], Awaitable[None]]) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except ApplianceError as exc:
                    await send({"type": "lifespan.startup.failed", "message": exc.message})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return


def _class_labels(recorded: Mapping[str, Any],
                  outputs: tuple[str, ...]) -> tuple[str | None, list[str]]:
    """A classifier's probabilities output and the class label of each of its columns, as
    the registry records them (a trained model's classes, an imported one's from its
    ZipMap or its data); (None, []) for any other model."""
    classes = [str(c) for c in recorded.get("classes") or []]
    if not classes:
        return None, []
    wanted = str((recorded.get("roles") or {}).get("probabilities", "probabilities"))
    if wanted in outputs:
        return wanted, classes
    return (outputs[0], classes) if len(outputs) == 1 else (None, [])


def _quote_path(path: str) -> bytes:
    """A decoded ASGI path, for a server that gives no ``raw_path``: '%' is escaped, so
    decoding it again gives it back."""
    return path.replace("%", "%25").encode("utf-8", "surrogateescape")


class _MethodNotAllowed(ApplianceError):
    status = 405


def create_app(
    config: Config | None = None,
    *,
    home: Home | None = None,
    source: ModelSource | None = None,
    authorizer: Authorizer | None = None,
) -> ServingApp:
    """Build the serving application; the CLI and gunicorn both call this."""
    config = config if config is not None else load_config()
    if home is None:
        home = Home.from_config(resolve_home(config), config)
    if source is None:
        from appliance.serving.registry_source import RegistrySource

        source = RegistrySource(home)
    metrics = Metrics()
    request_log = RequestLog(home.monitoring_db, metrics, config["serving.log_queue_capacity"])
    engine = Engine(source, EngineSettings.from_config(config), metrics=metrics,
                    request_log=request_log,
                    llm=LlmService(LlmSettings.from_config(config), request_log))
    if authorizer is None:
        authorizer = token_authorizer(home, config["serving.anonymous_loopback"])
    telemetry = gpu_telemetry.CachedTelemetry(gpu_telemetry.NvmlTelemetry(), max_age_s=5.0)
    return ServingApp(engine, authorizer=authorizer,
                      max_body_bytes=config["serving.max_body_bytes"], home=home,
                      busy_poll_us=config["serving.busy_poll_us"], config=config,
                      telemetry=telemetry)
