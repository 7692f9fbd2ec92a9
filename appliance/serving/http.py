"""The HTTP edge of the serving daemon: Open Inference Protocol (KServe V2) REST.

``create_app()`` reads the configuration once and returns a ``ServingApp``, a
plain ASGI application (no framework) that gunicorn's ASGI worker runs with
one worker process::

    gunicorn -k asgi -w 1 'appliance.serving.http:create_app()'

``appliance serve`` runs the same application through ``serve()``, a small
HTTP/1.1 server on asyncio that calls the application's ``handle`` directly
and skips the ASGI message round trips (faster on small models). Either way
one process owns the sessions and one batcher thread per model version.

Authorisation is a callable given to the factory: it receives an
``AuthRequest`` for each inference or model-metadata request and raises
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
import signal
import socket
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from http import HTTPStatus
from typing import Any, NamedTuple

from appliance import __version__
from appliance.audit.log import now_iso
from appliance.auth import authorize as authorize_principal
from appliance.auth.tokens import authenticate_token
from appliance.config import Config, load_config, resolve_home
from appliance.errors import ApplianceError, BadInput, NotFound, Unauthorized, Unavailable
from appliance.queue import liveness
from appliance.serving.codec import encode_response
from appliance.serving.engine import Engine, EngineSettings
from appliance.serving.metrics import Metrics
from appliance.serving.requestlog import RequestLog
from appliance.serving.source import ModelSource
from appliance.storage.home import Home
from appliance.system import sdnotify

log = logging.getLogger("appliance.serving")

JSON = b"application/json"
Headers = list[tuple[bytes, bytes]]
Response = tuple[int, Headers, bytes]


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
    model: str


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


def _json(status: int, value: Any, extra: Headers | None = None) -> Response:
    body = json.dumps(value, separators=(",", ":")).encode()
    return status, [(b"content-type", JSON), *(extra or [])], body


def _error(exc: ApplianceError) -> Response:
    extra: Headers = []
    if exc.status == 503:
        extra.append((b"retry-after", b"1"))
    elif exc.status == 401:
        extra.append((b"www-authenticate", b'Bearer realm="appliance"'))
    return _json(exc.status, {"error": exc.message}, extra)


BUSY_POLL_US = 100  # serving.busy_poll_us's default


class BusyPoll:
    """Keeps the event loop polling (never sleeping) for a while after the last activity.

    A request that arrives while the loop sleeps in epoll waits for the wake-up of an idle
    CPU, which on a virtual machine costs about as much as the request itself. For
    ``window_us`` after each ``touch()`` a callback re-queues itself, so every turn of the
    loop polls its sockets without blocking; then the loop sleeps as usual. Like
    onnxruntime's spinning threads, it spends CPU only while traffic flows.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, window_us: int) -> None:
        self._loop = loop
        self._window = window_us / 1e6
        self._last = 0.0
        self._active = False

    def touch(self) -> None:
        if self._window <= 0:
            return
        self._last = time.perf_counter()
        if not self._active:
            self._active = True
            self._loop.call_soon(self._spin)

    @property
    def active(self) -> bool:
        return self._active

    def _spin(self) -> None:
        if time.perf_counter() - self._last < self._window:
            self._loop.call_soon(self._spin)
        else:
            self._active = False


class ServingApp:
    def __init__(self, engine: Engine, *, authorizer: Authorizer, max_body_bytes: int,
                 home: Home | None = None, busy_poll_us: int = BUSY_POLL_US) -> None:
        self.engine = engine
        self.home = home  # where run() keeps the daemon's heartbeat row
        self.authorizer = authorizer
        self.busy_poll_us = busy_poll_us  # the built-in server's polling window
        # Requests read and not yet answered, over every connection: one alone may run inline.
        self.in_flight = 0
        self.max_body_bytes = max_body_bytes
        self._started = False
        self._start_lock: asyncio.Lock | None = None

    async def startup(self) -> None:
        if self._started:
            return
        if self._start_lock is None:
            self._start_lock = asyncio.Lock()
        async with self._start_lock:
            if not self._started:
                await self.engine.start()
                self._started = True

    async def shutdown(self) -> None:
        if self._started:
            await asyncio.to_thread(self.engine.stop)
            self._started = False

    # ---- one request ------------------------------------------------------

    async def handle(self, method: str, path: str, headers: Mapping[bytes, bytes],
                     body: bytes, client: str | None) -> Response:
        try:
            return await self._route(method, path, headers, body, client)
        except ApplianceError as exc:
            return _error(exc)

    async def _route(self, method: str, path: str, headers: Mapping[bytes, bytes],
                     body: bytes, client: str | None) -> Response:
        parts = path.strip("/").split("/")
        if parts[0] == "metrics" and len(parts) == 1:
            self._only(method, "GET")
            text = self.engine.metrics.render().encode()
            return 200, [(b"content-type", b"text/plain; version=0.0.4; charset=utf-8")], text
        if parts[0] != "v2":
            raise NotFound(f"no such endpoint: {path}")
        if len(parts) == 1:
            self._only(method, "GET")
            return _json(200, {"name": "appliance", "version": __version__,
                               "extensions": ["binary_tensor_data"]})
        if parts[1] == "health" and len(parts) == 3 and parts[2] in ("live", "ready"):
            self._only(method, "GET")
            if parts[2] == "live":
                return _json(200, {"live": True})
            if not self.engine.ready:
                raise Unavailable("the server is starting: models are loading")
            return _json(200, {"ready": True})
        if parts[1] != "models" or len(parts) < 3 or not parts[2]:
            raise NotFound(f"no such endpoint: {path}")
        name = parts[2]
        rest = parts[3:]
        version: int | None = None
        if rest[:1] == ["versions"]:
            if len(rest) < 2:
                raise NotFound(f"no such endpoint: {path}")
            try:
                version = int(rest[1])
            except ValueError:
                raise NotFound(f"model '{name}' has no version '{rest[1]}'") from None
            if version < 1:
                raise NotFound(f"model '{name}' has no version '{rest[1]}'")
            rest = rest[2:]
        action = rest[0] if rest else ""
        if len(rest) > 1 or action not in ("", "ready", "infer"):
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
                return _json(503, {"name": name, "ready": False}, [(b"retry-after", b"1")])
            return _json(200, {"name": name, "ready": True})
        return _json(200, await self._metadata(name, version))

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
        doc.update({
            "platform": "onnxruntime_onnx",
            "inputs": [s.as_dict() for s in model.signature.inputs],
            "outputs": [s.as_dict() for s in model.signature.outputs],
            "parameters": {"execution_provider": model.provider,
                           "version": str(model.version)},
        })
        return doc

    async def _infer(self, name: str, version: int | None, headers: Mapping[bytes, bytes],
                     body: bytes) -> Response:
        arrived = time.perf_counter()
        raw = headers.get(b"inference-header-content-length")
        header_length = None
        if raw is not None:
            try:
                header_length = int(raw)
            except ValueError:
                raise BadInput("Inference-Header-Content-Length must be an integer") from None
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
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                status, hdrs, body = _json(413, {"error": f"request body is larger than "
                                                          f"{self.max_body_bytes} bytes"})
                await send({"type": "http.response.start", "status": status, "headers": hdrs})
                await send({"type": "http.response.body", "body": body})
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        client = scope.get("client")
        self.in_flight += 1
        try:
            status, hdrs, body = await self.handle(
                scope["method"], scope["path"], headers, b"".join(chunks),
                client[0] if client else None,
            )
        finally:
            self.in_flight -= 1
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
                    request_log=request_log)
    if authorizer is None:
        authorizer = token_authorizer(home, config["serving.anonymous_loopback"])
    return ServingApp(engine, authorizer=authorizer,
                      max_body_bytes=config["serving.max_body_bytes"], home=home,
                      busy_poll_us=config["serving.busy_poll_us"])


# ---- the built-in HTTP/1.1 server ---------------------------------------------

_REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}


class _Connection(asyncio.Protocol):
    """HTTP/1.1 with keep-alive and Content-Length bodies, one request at a time."""

    def __init__(self, app: ServingApp, poll: BusyPoll) -> None:
        self.app = app
        self.poll = poll
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.busy = False
        self.client: str | None = None
        self.closing = False
        self.paused = False
        self.task: asyncio.Task[None] | None = None  # answering the request in progress

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = transport.get_extra_info("peername")
        self.client = peer[0] if peer else None

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.poll.touch()
        self.buf += data
        if not self.busy:
            self._next()
        elif (len(self.buf) > self.app.max_body_bytes + 65536 and self.transport is not None
              and not self.paused):
            # A client pipelining more than one request can hold: stop reading until the
            # one in progress is answered, so a connection never buffers without bound.
            self.transport.pause_reading()
            self.paused = True

    def _next(self) -> None:
        while not self.busy and self.transport is not None and not self.closing:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > 65536:
                    self._fail(431, "request headers are too large")
                return
            head = bytes(self.buf[:end]).split(b"\r\n")
            try:
                method, target, proto = head[0].decode("latin-1").split(" ")
            except ValueError:
                self._fail(400, "malformed request line")
                return
            headers: dict[bytes, bytes] = {}
            for line in head[1:]:
                key, sep, value = line.partition(b":")
                if not sep:
                    self._fail(400, "malformed header line")
                    return
                headers[key.strip().lower()] = value.strip()
            if b"transfer-encoding" in headers:
                self._fail(411, "send the body with Content-Length, not chunked")
                return
            raw_length = headers.get(b"content-length", b"0")
            if not raw_length.isdigit():  # int() would take '-5', '+5' and '1_0'
                self._fail(400, "bad Content-Length")
                return
            length = int(raw_length)
            if length > self.app.max_body_bytes:
                self._fail(413, f"request body is larger than {self.app.max_body_bytes} bytes")
                return
            total = end + 4 + length
            if len(self.buf) < total:
                if headers.get(b"expect", b"").lower() == b"100-continue":
                    headers.pop(b"expect")
                    self.buf[:end] = self._rebuild(head[0], headers)
                    self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                return
            with memoryview(self.buf) as view:  # one copy of the body, not two
                body = bytes(view[end + 4 : total])
            del self.buf[:total]
            conn = headers.get(b"connection", b"").lower()
            keep = conn != b"close" if proto == "HTTP/1.1" else conn == b"keep-alive"
            path = target.split("?", 1)[0]
            self.busy = True
            self.app.in_flight += 1
            self.task = asyncio.get_running_loop().create_task(
                self._answer(method, path, headers, body, keep))

    @staticmethod
    def _rebuild(request_line: bytes, headers: dict[bytes, bytes]) -> bytes:
        lines = [request_line] + [k + b": " + v for k, v in headers.items()]
        return b"\r\n".join(lines)

    async def _answer(self, method: str, path: str, headers: dict[bytes, bytes], body: bytes,
                      keep: bool) -> None:
        try:
            status, response_headers, response = await self.app.handle(
                method, path, headers, body, self.client)
        except Exception:  # a bug, not a bad request: answer 500 rather than hang the client
            log.exception("request failed")
            status, response_headers, response = _json(
                500, {"error": "internal error; see the serving log"})
            keep = False
        finally:
            self.busy = False
            self.app.in_flight -= 1
        if self.transport is None:
            return
        if self.paused:
            self.transport.resume_reading()
            self.paused = False
        self._write(status, response_headers, response, keep, method == "HEAD")
        if keep:
            self._next()

    def _write(self, status: int, headers: Headers, body: bytes, keep: bool,
               head: bool = False) -> None:
        if self.transport is None:
            return
        self.poll.touch()  # the client's next request may be close behind this answer
        lines = [b"HTTP/1.1 %d %s" % (status, _REASONS.get(status, b"Unknown"))]
        lines.extend(k + b": " + v for k, v in headers)
        lines.append(b"content-length: %d" % len(body))
        if not keep:
            lines.append(b"connection: close")
        self.transport.write(b"\r\n".join(lines) + b"\r\n\r\n" + (b"" if head else body))
        if not keep:
            self.closing = True
            self.transport.close()

    def _fail(self, status: int, message: str) -> None:
        body = json.dumps({"error": message}).encode()
        self._write(status, [(b"content-type", JSON)], body, keep=False)


async def serve(app: ServingApp, host: str, port: int, *, stop: asyncio.Event,
                on_ready: Callable[[int], None] | None = None) -> None:
    """Serve until ``stop`` is set; ``on_ready`` gets the bound port (useful with port 0)."""
    loop = asyncio.get_running_loop()
    await app.startup()
    poll = BusyPoll(loop, app.busy_poll_us)
    server = await loop.create_server(lambda: _Connection(app, poll), host, port, backlog=1024,
                                      reuse_address=True)
    bound = server.sockets[0].getsockname()[1]
    log.info("serving the V2 inference protocol on http://%s:%d", host, bound)
    if on_ready is not None:
        on_ready(bound)
    try:
        await stop.wait()
    finally:
        server.close()
        await server.wait_closed()
        await app.shutdown()


def run(app: ServingApp, host: str, port: int) -> None:
    """The daemon's main loop: SIGTERM and SIGINT only set the stop flag."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        interval = sdnotify.watchdog_interval()
        if interval:
            loop.create_task(_watchdog(interval))
        if app.home is not None:
            loop.create_task(_heartbeat(app, app.home))
        def ready(_port: int) -> None:
            sdnotify.notify("READY=1")

        await serve(app, host, port, stop=stop, on_ready=ready)
        sdnotify.notify("STOPPING=1")
        if app.home is not None:
            await asyncio.to_thread(write_heartbeat, app.home, None, app)

    asyncio.run(main())


HEARTBEAT_S = 15.0


def write_heartbeat(home: Home, started_at: str | None, app: ServingApp) -> None:
    """Write (or, with no ``started_at``, clear) the daemon's row in ``heartbeats``, naming
    the GPUs its sessions use, so the console shows serving up and what holds each GPU."""
    with home.db() as db:
        if started_at is None:
            liveness.clear(db, "serving")
            return
        providers = list(app.engine.providers or ())
        on_gpu = "CUDAExecutionProvider" in providers
        liveness.beat(db, "serving", started_at,
                      {"providers": providers, "gpu_indices": [0] if on_gpu else []})


async def _heartbeat(app: ServingApp, home: Home) -> None:
    started_at = now_iso()
    while True:
        try:
            await asyncio.to_thread(write_heartbeat, home, started_at, app)
        except sqlite3.Error as exc:  # a busy or locked database: try at the next beat
            log.warning("serving heartbeat not written: %s", exc)
        await asyncio.sleep(HEARTBEAT_S)


async def _watchdog(every: float) -> None:
    while True:
        sdnotify.notify("WATCHDOG=1")
        await asyncio.sleep(every)


class ServerThread:
    """The built-in server on a thread of its own: for tests, benchmarks and embedding."""

    def __init__(self, app: ServingApp, host: str = "127.0.0.1", port: int = 0) -> None:
        self.app = app
        self.host = host
        self.port = port
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, name="serving-http", daemon=True)

    def _main(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()

            def ready(port: int) -> None:
                self.port = port
                self._ready.set()

            await serve(self.app, self.host, self.port, stop=self._stop, on_ready=ready)

        try:
            asyncio.run(main())
        except (ApplianceError, OSError) as exc:
            self._error = exc
            self._ready.set()

    def start(self, timeout: float = 60.0) -> ServerThread:
        self._thread.start()
        if not self._ready.wait(timeout):
            raise Unavailable("the serving thread did not start in time")
        if self._error is not None:
            raise self._error
        return self

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self, timeout: float = 30.0) -> None:
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)
